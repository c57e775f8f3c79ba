"""Scores for synthesized (or any) speech, against text and reference recordings.

- Intelligibility: an ASR round trip, then WER and CER after normalising both
  sides with :func:`voicemill.textnorm.for_scoring` (the same normaliser that
  built the dataset).
- Quality: DNSMOS P.835 (SIG, BAK, OVRL) and P.808 from the ``speechmos``
  package's bundled ONNX models, and Distill-MOS from ``distillmos``.
- Speaker similarity: cosine between resemblyzer (GE2E) embeddings.
- Speed: real-time factor (seconds of compute per second of audio).

All functions take float32 mono audio with its sample rate and resample
themselves.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import soxr

from voicemill.textnorm import for_scoring

_LOGGER = logging.getLogger(__name__)

SCORE_RATE = 16000


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return soxr.resample(audio, rate, SCORE_RATE) if rate != SCORE_RATE else audio


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two token sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def edge_errors(reference: str, hypothesis: str, language: str = "en") -> tuple[bool, bool]:
    """Whether the hypothesis lacks or adds a word at its start, and at its end (after normalising both).

    A gap at an edge counts only when every least-cost alignment has it: "a
    ticket costs" heard as "i take it cost" is misheard words, not a word
    that went to the neighbouring clip.
    """
    ref, hyp = for_scoring(reference, language).split(), for_scoring(hypothesis, language).split()
    if not ref or not hyp:
        return (bool(ref) != bool(hyp),) * 2
    best = edit_distance(ref, hyp)
    start = (ref[0] != hyp[0]) + edit_distance(ref[1:], hyp[1:]) > best
    end = (ref[-1] != hyp[-1]) + edit_distance(ref[:-1], hyp[:-1]) > best
    return start, end


def error_counts(reference: str, hypothesis: str, language: str = "en") -> dict:
    """Word and character edit counts after normalising both sides."""
    ref, hyp = for_scoring(reference, language), for_scoring(hypothesis, language)
    ref_words, hyp_words = ref.split(), hyp.split()
    return {
        "word_errors": edit_distance(ref_words, hyp_words),
        "words": len(ref_words),
        "char_errors": edit_distance(list(ref.replace(" ", "")), list(hyp.replace(" ", ""))),
        "chars": len(ref.replace(" ", "")),
    }


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    c = error_counts(reference, hypothesis, language)
    return c["word_errors"] / max(1, c["words"])


def _dnsmos_input(audio: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz float32, scaled down when it peaks over full scale (DNSMOS expects -1..1)."""
    audio = to_16k(audio, rate)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio / peak if peak > 1.0 else audio


def dnsmos(audio: np.ndarray, rate: int) -> dict:
    """DNSMOS P.835 and P.808 scores (1 to 5, higher is better)."""
    from speechmos import dnsmos as _dnsmos

    r = _dnsmos.run(_dnsmos_input(audio, rate), SCORE_RATE)
    return {"dnsmos_sig": float(r["sig_mos"]), "dnsmos_bak": float(r["bak_mos"]),
            "dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_p808": float(r["p808_mos"])}


@functools.cache
def _p835_session():
    """The DNSMOS P.835 model (``speechmos``'s sig_bak_ovr.onnx) alone, once per process: not the P.808 model
    that ``speechmos.dnsmos.run`` also loads and runs (about 100 MB more at its peak, and librosa)."""
    import onnxruntime as ort
    import speechmos

    path = Path(speechmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def dnsmos_p835(audio: np.ndarray, rate: int) -> dict:
    """DNSMOS P.835 SIG, BAK and OVRL only, from at most two 9 s windows: quick enough per clip.

    The reference script slides its 9.01 s window by 1 s and also runs the
    P.808 model; for utterance clips (a few seconds, looped to 9 s as the
    reference does) one window covers it, two for clips over 9 s (the start
    and the end). Same model, same calibration polynomials. The model costs
    about 0.36 CPU-seconds per window whatever the batch (it is convolutions
    over a 900 x 161 spectrogram): the price of scoring a clip.
    """
    from speechmos.dnsmos import DNSMOS, INPUT_LENGTH

    audio = _dnsmos_input(audio, rate)
    if audio.size == 0:
        audio = np.zeros(SCORE_RATE, dtype=np.float32)
    n = int(INPUT_LENGTH * SCORE_RATE)
    while len(audio) < n:
        audio = np.concatenate([audio, audio])
    starts = sorted({0, len(audio) - n})
    scores = []
    for start in starts:
        raw = _p835_session().run(None, {"input_1": audio[None, start : start + n]})[0][0]
        scores.append(DNSMOS.get_polyfit_val(None, *raw, False))  # a plain function of the raw scores
    sig, bak, ovrl = (float(np.mean(v)) for v in zip(*scores))
    return {"dnsmos_sig": sig, "dnsmos_bak": bak, "dnsmos_ovrl": ovrl}


class DistillMOS:
    """Distill-MOS (weights ship in the ``distillmos`` package): one MOS per clip."""

    def __init__(self):
        import distillmos
        import torch

        self.torch = torch
        self.model = distillmos.ConvTransformerSQAModel()
        self.model.eval()

    def __call__(self, audio: np.ndarray, rate: int) -> float:
        x = self.torch.from_numpy(to_16k(audio, rate).copy())[None, :]
        with self.torch.no_grad():
            return float(self.model(x).reshape(-1)[0])


def ci95(values) -> float:
    """Half-width of a normal-approximation 95% confidence interval of the mean."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


class SpeakerEncoder:
    """resemblyzer's GE2E speaker encoder (weights ship in the package), run without torch (``voicemill.ge2e``)."""

    def __init__(self):
        from voicemill import ge2e

        self.encoder = ge2e.encoder()

    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray:
        return self.embed_partials(audio, rate)[0]

    def embed_partials(self, audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """The clip's embedding and those of its 1.6 s partial windows (at least one)."""
        from voicemill import ge2e

        audio = to_16k(audio, rate)
        wav = ge2e.preprocess(audio)
        if wav.size < SCORE_RATE // 4:
            wav = audio  # too little voiced audio after trimming: use it all
        return self.encoder.embed_utterance(wav)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def mean_embedding(embeddings: list[np.ndarray]) -> np.ndarray:
    m = np.mean(np.stack(embeddings), axis=0)
    return m / (np.linalg.norm(m) + 1e-12)


def validity(audio: np.ndarray, rate: int, text: str) -> str:
    """Empty string when a synthesized clip looks sane, else the reason."""
    if audio.size == 0:
        return "empty"
    if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < 1e-3:
        return "silent"
    if float(np.mean(np.abs(audio) >= 0.999)) > 0.01:
        return "clipped"
    seconds = audio.size / rate
    if seconds > 1.0 + 0.25 * max(1, len(text)):
        return "too_long"
    return ""
