"""Scores for synthesized (or any) speech, against text and reference recordings.

- Intelligibility: an ASR round trip, then WER and CER after normalising both
  sides with :func:`voicemill.textnorm.for_scoring` (the same normaliser that
  built the dataset).
- Quality: DNSMOS P.835 (SIG, BAK, OVRL) and P.808 from the ``speechmos``
  package's bundled ONNX models, and Distill-MOS from ``distillmos``.
- Speaker similarity: cosine between resemblyzer (GE2E) embeddings.
- Speed: real-time factor (seconds of compute per second of audio).
- Against a time-aligned reference of the same sentence (a voice's export
  variants, noise off): :func:`mel_distance_db`, and PESQ and STOI
  (:func:`intrusive`).

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


# --------------------------------------------------------------- against a reference rendering


def log_mel_db(audio: np.ndarray, rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    """Power mel spectrogram in dB, (frames, n_mels): Hann window, HTK mel scale from 0 to rate / 2."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(0.0, mel(rate / 2), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    rising = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return 10.0 * np.log10(np.maximum(power @ bank.T, 1e-10))


def _dtw(cost: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """The least-cost monotonic alignment of the rows and columns of ``cost`` (steps right, down, both): its mean
    cost along the path, and the path as (row, column) pairs from (0, 0) to the last cell."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1))
    came = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0: diagonal, 1: from the row above, 2: from the left
    total[0, 0] = 0.0
    for k in range(2, n + m + 1):  # one anti-diagonal (i + j = k) at a time: its cells depend on earlier ones only
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        before = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])
        pick = np.argmin(before, axis=0)
        cols = np.arange(i.size)
        total[i, j] = cost[i - 1, j - 1] + before[pick, cols]
        steps[i, j] = 1 + np.stack([steps[i - 1, j - 1], steps[i - 1, j], steps[i, j - 1]])[pick, cols]
        came[i, j] = pick
    path, i, j = [], n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = came[i, j]
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    return float(total[n, m] / steps[n, m]), path[::-1]


def _mel_pair(reference: np.ndarray, other: np.ndarray, rate: int, floor_db: float = 80.0) -> np.ndarray:
    """Frame-to-frame distances (reference frames x other frames) of the two log-mel spectrograms, both floored
    ``floor_db`` below the reference's loudest bin."""
    a, b = log_mel_db(reference, rate), log_mel_db(other, rate)
    floor = a.max() - floor_db
    a, b = np.maximum(a, floor), np.maximum(b, floor)
    return np.stack([np.abs(b - frame).mean(axis=1) for frame in a])  # row by row: (n, m), not (n, m, bands)


def mel_distance_db(reference: np.ndarray, other: np.ndarray, rate: int, floor_db: float = 80.0) -> float:
    """How far ``other`` sounds from ``reference`` (the same sentence), in dB; 0 when they are the same.

    Both are turned into 80-band log-mel spectrograms (1024-sample Hann
    window, hop 256: 11.6 ms frames at 22050 Hz), every value floored at
    ``floor_db`` below the reference's loudest bin, so that the noise in
    silences (inaudible) does not count. The distance of two frames is the
    mean absolute difference over the bands; the frames are paired by
    dynamic time warping, so a phoneme one frame longer (the duration
    predictor rounds up, and a variant can round a duration the other way)
    shifts nothing after it; the result is the mean distance over the
    pairs of the warping path.

    For scale, on joe and the demo voice (eight sentences): fp16 0.1 dB,
    int8 1.1 dB, the same sentence drawn with Piper's default noise 1.9 dB,
    6 dB quieter 4 dB, another sentence 7.7 dB. A shift by a fraction of a
    hop costs by itself (half a hop: 2 dB); a VITS voice's durations move by
    whole hops of 256 samples, the hop used here.
    """
    return _dtw(_mel_pair(reference, other, rate, floor_db))[0]


def aligned(reference: np.ndarray, other: np.ndarray, rate: int, hop: int = 256,
            path: list[tuple[int, int]] | None = None) -> np.ndarray:
    """``other`` put on ``reference``'s time line, a hop at a time, along the frames' warping path.

    For renderings of one sentence whose durations differ by whole hops (a VITS
    voice and its export variants: a phoneme one frame longer or shorter),
    so that measures that compare sample by sample (PESQ, STOI) hear the
    sound and not the shift. Each reference frame takes the first frame of
    ``other`` paired with it; the result has ``reference``'s length.
    ``path``: the warping path when already found (:func:`_dtw`).
    """
    if path is None:
        _, path = _dtw(_mel_pair(reference, other, rate))
    first: dict[int, int] = {}
    for i, j in path:
        first.setdefault(i, j)
    padded = np.pad(np.asarray(other, dtype=np.float32), (0, hop * (max(first.values()) + 2)))
    out = np.concatenate([padded[first[i] * hop:(first[i] + 1) * hop] for i in sorted(first)])
    return np.pad(out, (0, max(0, len(reference) - out.size)))[:len(reference)]


def intrusive(reference: np.ndarray, degraded: np.ndarray, rate: int) -> dict[str, float]:
    """``degraded`` against ``reference``, the same sentence: :func:`mel_distance_db`, and after
    :func:`aligned` PESQ (ITU-T P.862.2 wide band, 1 .. 4.64; NaN where it finds no speech) and STOI (0 .. 1)."""
    from pesq import PesqError, pesq
    from pystoi import stoi

    reference = np.asarray(reference, dtype=np.float32)
    distance, path = _dtw(_mel_pair(reference, degraded, rate))
    other = aligned(reference, degraded, rate, path=path)
    try:
        p = float(pesq(SCORE_RATE, to_16k(reference, rate), to_16k(other, rate), "wb"))
    except PesqError:
        p = float("nan")
    return {"mel_distance_db": distance, "pesq": p, "stoi": float(stoi(reference, other, rate, extended=False))}
