"""Audio embedding backends, the Fréchet distance between sets, and CLAP.

A backend turns a clip into a matrix of embedding vectors (one row per frame
or window), so that a few clips still give enough vectors for a covariance:

- ``resemblyzer``: GE2E speaker-encoder partial embeddings (256-d, a window
  every 0.25 s), from the weights in the ``resemblyzer`` package
  (``voicemill.ge2e`` runs them without torch).
- ``whisper``: Whisper encoder outputs (one 20 ms frame per row) from a
  bundled or configured faster-whisper model.
- ``clap``: CLAP audio embeddings (one per clip) from a configured
  ``transformers`` CLAP model directory or hub id.

The Fréchet distance (FD; "FAD" with an audio embedding) between two sets is
``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. It is biased upwards at
small sample sizes, so :func:`fad_report` also gives the distance between the
two halves of the reference set (the noise floor) and the counts used.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.linalg

from voicemill.errors import VoicemillError
from voicemill.scoring import SCORE_RATE, cosine, to_16k

_LOGGER = logging.getLogger(__name__)

BACKENDS = ("resemblyzer", "whisper", "clap")


class ResemblyzerBackend:
    name = "resemblyzer"

    def __init__(self, encoder=None):
        from voicemill import ge2e

        self.encoder = encoder or ge2e.encoder()

    def frames(self, audio: np.ndarray, rate: int) -> np.ndarray:
        wav = to_16k(audio, rate)
        if wav.size < SCORE_RATE // 2:
            return np.zeros((0, 256), dtype=np.float32)
        _, partials = self.encoder.embed_utterance(wav, rate=4, min_coverage=0.5)
        return np.asarray(partials, dtype=np.float32)


class WhisperEncoderBackend:
    name = "whisper"

    def __init__(self, model_name: str = "tiny.en", num_threads: int = 2, model=None):
        from voicemill import asr

        self.model = model or asr.load_model(model_name, device="cpu", cpu_threads=num_threads)

    def frames(self, audio: np.ndarray, rate: int) -> np.ndarray:
        wav = to_16k(audio, rate)[: 30 * SCORE_RATE]
        features = self.model.feature_extractor(wav)
        n_mel = self.model.feature_extractor.nb_max_frames  # 3000 mel frames = 30 s
        padded = np.zeros((features.shape[0], n_mel), dtype=np.float32)
        padded[:, : min(n_mel, features.shape[1])] = features[:, :n_mel]
        encoded = np.array(self.model.encode(padded))[0]  # [1500, d], 20 ms per row
        n = max(1, math.ceil(wav.size / (2 * 160)))  # rows that hold audio, not padding
        return encoded[:n].astype(np.float32)


class ClapBackend:
    """A ``transformers`` CLAP model: audio and text embeddings in one space."""

    name = "clap"
    RATE = 48000

    def __init__(self, model: str):
        if not model:
            raise VoicemillError("no CLAP model configured (evaluate.clap_model is empty)")
        import torch
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        try:
            self.model = ClapModel.from_pretrained(model).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.features = ClapFeatureExtractor.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise VoicemillError(
                f"CLAP model {model!r} could not be loaded ({e}); give a local directory saved with "
                "save_pretrained (model, tokenizer, feature extractor) or a hub id such as "
                "'laion/clap-htsat-unfused' (needs a network once)"
            ) from e
        self.torch = torch

    def _audio_features(self, audio: np.ndarray, rate: int):
        import soxr

        wav = soxr.resample(np.asarray(audio, dtype=np.float32), rate, self.RATE) if rate != self.RATE else audio
        inputs = self.features(wav, sampling_rate=self.RATE, return_tensors="pt")
        with self.torch.no_grad():
            out = self.model.get_audio_features(**inputs)
        out = getattr(out, "pooler_output", out)
        return out[0].numpy()

    def frames(self, audio: np.ndarray, rate: int) -> np.ndarray:
        return self._audio_features(audio, rate)[None, :].astype(np.float32)

    def score(self, audio: np.ndarray, rate: int, text: str) -> float:
        """Cosine similarity of the clip's and the text's CLAP embeddings."""
        tokens = self.tokenizer([text], return_tensors="pt", padding=True)
        with self.torch.no_grad():
            t = self.model.get_text_features(**tokens)
        t = getattr(t, "pooler_output", t)[0].numpy()
        a = self._audio_features(audio, rate)
        return cosine(a, t)


def make_backend(name: str, asr_model: str = "tiny.en", clap_model: str = "", num_threads: int = 2,
                 whisper_model=None, speaker_encoder=None):
    """A backend by name; ``whisper_model`` and ``speaker_encoder`` reuse models already loaded."""
    if name == "resemblyzer":
        return ResemblyzerBackend(speaker_encoder)
    if name == "whisper":
        return WhisperEncoderBackend(asr_model, num_threads, model=whisper_model)
    if name == "clap":
        return ClapBackend(clap_model)
    raise VoicemillError(f"unknown FAD backend {name!r}; choose from {', '.join(BACKENDS)}")


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between two sets of row vectors (Gaussian fit of each)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 vectors per set, got {len(a)} and {len(b)}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1 = np.cov(a, rowvar=False) + eps * np.eye(a.shape[1])
    s2 = np.cov(b, rowvar=False) + eps * np.eye(b.shape[1])
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return max(value, 0.0)


def fad_report(backend, synth: list[tuple[np.ndarray, int]], real: list[tuple[np.ndarray, int]]) -> dict:
    """FD of synthesized against real clips, the real set's split-half noise floor, and counts.

    The noise floor compares the even and odd clips of the real set (in the
    order given, which callers keep fixed), so a value near it means the
    synthesized set is as close to the real one as the real set is to itself.
    """
    synth_rows = [backend.frames(a, r) for a, r in synth]
    real_rows = [backend.frames(a, r) for a, r in real]
    s = np.concatenate([x for x in synth_rows if len(x)] or [np.zeros((0, 1))])
    g = np.concatenate([x for x in real_rows if len(x)] or [np.zeros((0, 1))])
    half_a = [x for x in real_rows[0::2] if len(x)]
    half_b = [x for x in real_rows[1::2] if len(x)]
    report = {"vectors_synth": int(len(s)), "vectors_real": int(len(g)), "clips_synth": len(synth),
              "clips_real": len(real)}
    try:
        report["value"] = frechet_distance(s, g)
        report["noise_floor"] = frechet_distance(np.concatenate(half_a), np.concatenate(half_b)) if (
            half_a and half_b) else float("nan")
    except ValueError as e:
        _LOGGER.warning("FAD with %s not computed: %s", backend.name, e)
        report["value"], report["noise_floor"] = float("nan"), float("nan")
    return report

