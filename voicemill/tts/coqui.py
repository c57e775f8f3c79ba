"""A voicemill voice on disk and in memory: a coqui-tts ``Vits`` plus the Piper voice config it speaks by.

A voice directory (``models/tts``) holds:

- ``model.pth``: ``{"model": state_dict, "step": n, "preset": ..., "init_from": ...}``
  (what coqui's ``load_checkpoint`` reads, with the discriminator, so a
  later run can fine-tune from it);
- ``config.json``: the coqui ``VitsConfig`` (sizes, audio);
- ``voice.json``: the Piper voice config (``audio.sample_rate``, ``espeak.voice``,
  ``phoneme_type``, ``phoneme_id_map``, ``num_symbols``, ``inference``,
  ``language``, ``dataset``), which ``export`` ships as ``voice.onnx.json``.

The artifact carries its own config: loading needs nothing else, and
synthesis goes text -> normalised text -> phonemes -> ids with the voice's
own language and map (``voicemill.tts.phonemes``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voicemill.fsutil import atomic_path, write_json
from voicemill.tts.phonemes import FrontEnd

_LOGGER = logging.getLogger(__name__)

PIPER_VERSION = "1.0.0"  # the voice-file layout Piper's runtime reads (as in the joe voice's JSON)
#: Piper's default synthesis settings (the noise of the latent, speaking rate, the noise of the durations).
DEFAULT_INFERENCE = {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8}


def read_metadata(path: Path) -> list[tuple[str, str, str]]:
    """Rows of an LJSpeech ``metadata.csv``: (id, raw, normalized)."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("|")
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 'id|raw|normalized', got {line!r}")
        rows.append((parts[0], parts[1], parts[2]))
    return rows


def piper_config(front: FrontEnd, sample_rate: int, num_symbols: int, quality: str, dataset: str,
                 inference: dict | None = None) -> dict:
    """The voice JSON Piper's runtime reads (``PiperVoice.load``), plus the language and dataset names."""
    from voicemill.textnorm import base_language

    code = front.language.replace("-", "_")
    family = base_language(code)
    region = code.split("_")[1].upper() if "_" in code else ""
    return {
        "audio": {"sample_rate": int(sample_rate), "quality": quality},
        "espeak": {"voice": front.voice},
        "inference": dict(inference or DEFAULT_INFERENCE),
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": front.id_map,
        "num_symbols": int(num_symbols),
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": PIPER_VERSION,
        "language": {"code": f"{family}_{region}" if region else family, "family": family, "region": region},
        "dataset": dataset,
    }


@dataclass
class Voice:
    """A loaded voice: the coqui model, its config, and the Piper front end and config."""

    model: object
    config: object
    piper: dict
    front: FrontEnd

    @property
    def sample_rate(self) -> int:
        return int(self.piper["audio"]["sample_rate"])

    def ids(self, text: str) -> list[int]:
        return self.front.text_to_ids(text)

    @torch.no_grad()
    def synthesize(self, text: str, noise_scale: float | None = None, length_scale: float | None = None,
                   noise_w: float | None = None) -> np.ndarray:
        """Raw text -> float32 waveform at :attr:`sample_rate`; scales default to the voice's ``inference``."""
        return synthesize_ids(self.model, self.ids(text), **self._scales(noise_scale, length_scale, noise_w))

    def _scales(self, noise_scale, length_scale, noise_w) -> dict:
        inf = self.piper.get("inference", DEFAULT_INFERENCE)
        return {"noise_scale": inf["noise_scale"] if noise_scale is None else noise_scale,
                "length_scale": inf["length_scale"] if length_scale is None else length_scale,
                "noise_w": inf["noise_w"] if noise_w is None else noise_w}


def set_scales(model, noise_scale: float, length_scale: float, noise_w: float) -> None:
    """Piper's three synthesis scales, set where coqui's ``Vits.inference`` reads them."""
    model.inference_noise_scale, model.length_scale, model.inference_noise_scale_dp = noise_scale, length_scale, noise_w


@torch.no_grad()
def synthesize_ids(model, ids: list[int], noise_scale: float, length_scale: float, noise_w: float) -> np.ndarray:
    """Piper ids -> float32 waveform, with Piper's three scales."""
    set_scales(model, noise_scale, length_scale, noise_w)
    x = torch.LongTensor(ids).unsqueeze(0).to(next(model.parameters()).device)
    out = model.inference(x, aux_input={"x_lengths": torch.LongTensor([x.shape[1]])})
    return out["model_outputs"].squeeze().cpu().numpy().astype(np.float32)


def save_voice(out_dir: Path, model, piper: dict, extra: dict) -> None:
    """Write ``model.pth``, ``config.json`` and ``voice.json``, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.output_path = ""
    with atomic_path(out_dir / "model.pth") as tmp:
        torch.save({"model": model.state_dict(), **extra}, tmp)
    with atomic_path(out_dir / "config.json") as tmp:
        config.save_json(str(tmp))
    write_json(out_dir / "voice.json", piper)


def load_model(voice_dir: Path, eval: bool = True):
    """The coqui model and config of a voice directory (with its discriminator when ``eval`` is False)."""
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits

    voice_dir = Path(voice_dir)
    for name in ("model.pth", "config.json"):
        if not (voice_dir / name).exists():
            raise FileNotFoundError(f"{voice_dir / name}: not found; it is written by the train stage")
    config = VitsConfig()
    config.load_json(str(voice_dir / "config.json"))
    model = Vits(config)
    state = torch.load(voice_dir / "model.pth", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"], strict=not eval)
    if eval:
        model.eval()
    return model, config, state


def load_voice(voice_dir: Path) -> Voice:
    """Load a voice directory for synthesis (CPU, eval mode)."""
    if not (Path(voice_dir) / "voice.json").exists():
        raise FileNotFoundError(f"{Path(voice_dir) / 'voice.json'}: not found; it is written by the train stage "
                                f"(a voice trained before Piper phonemes has none: retrain it)")
    model, config, _ = load_model(voice_dir)
    piper = json.loads((Path(voice_dir) / "voice.json").read_text())
    front = FrontEnd(language=piper.get("voicemill", {}).get("language", "en"), voice=piper["espeak"]["voice"],
                     id_map=piper["phoneme_id_map"])
    return Voice(model, config, piper, front)
