"""Audio input and output: decoding with ffmpeg, WAV writing, simple measures.

All audio inside voicemill is float32 mono in [-1, 1] unless a function says
otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from voicemill.fsutil import atomic_path
from voicemill.errors import VoicemillError


class AudioError(VoicemillError):
    """An audio file could not be read; the message names the file."""


def require_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(
            "ffmpeg was not found on PATH; install it (Debian/Ubuntu: 'apt-get install ffmpeg', "
            "macOS: 'brew install ffmpeg')"
        )
    return exe


def probe(path: Path) -> dict:
    """Duration, sample rate and channels of a media file (ffprobe), or AudioError."""
    exe = shutil.which("ffprobe") or "ffprobe"
    cmd = [exe, "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels:format=duration", "-of", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AudioError(f"{path}: not a readable media file ({proc.stderr.strip() or 'ffprobe failed'})")
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        raise AudioError(f"{path}: has no audio stream")
    duration = float(info.get("format", {}).get("duration") or 0.0)
    return {"duration_s": duration, "sample_rate": int(streams[0].get("sample_rate", 0)),
            "channels": int(streams[0].get("channels", 0))}


def decode(path: Path, sample_rate: int, max_s: float | None = None) -> np.ndarray:
    """Decode any media file ffmpeg reads into float32 mono at ``sample_rate`` (at most its first ``max_s``)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    limit = ["-t", f"{max_s:g}"] if max_s is not None else []
    cmd = [require_ffmpeg(), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", *limit,
           "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"{path}: ffmpeg could not decode it: {proc.stderr.decode(errors='replace').strip()}")
    samples = np.frombuffer(proc.stdout, dtype=np.float32)
    if samples.size == 0:
        raise AudioError(f"{path}: decoded to no audio (empty or corrupt file)")
    return samples.copy()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as float32 mono; returns (samples, rate)."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable WAV file ({e})") from e
    return data.mean(axis=1), int(rate)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples as 16-bit PCM mono WAV, atomically.

    float32 samples are converted to int16 here, as libsndfile 1.2 does it
    (floor of x * 32768, clipped; the same bytes, tested), because
    libsndfile's per-sample loop was a fifth of segment's clip pass; other
    dtypes go to libsndfile as they are.
    """
    if samples.dtype == np.float32:  # clipping after scaling gives what clipping to -1..1 first gives
        samples = np.clip(np.floor(samples * np.float32(32768)), -32768, 32767).astype(np.int16)
    else:
        samples = np.clip(samples, -1.0, 1.0)
    with atomic_path(Path(path)) as tmp:
        sf.write(str(tmp), samples, sample_rate, subtype="PCM_16", format="WAV")


def frame_rms_db(samples: np.ndarray, frame: int) -> np.ndarray:
    """RMS level in dBFS of consecutive frames of ``frame`` samples."""
    n = len(samples) // frame
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def sound_bounds(samples: np.ndarray, sample_rate: int, threshold_db: float = -45.0,
                 frame_ms: int = 5) -> tuple[int, int]:
    """[start, end) sample indices from the first to the last frame louder than ``threshold_db``."""
    frame = max(1, sample_rate * frame_ms // 1000)
    loud = np.flatnonzero(frame_rms_db(samples, frame) > threshold_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


#: Half-width of the window a pile-up is looked for in, in natural-log amplitude (+-4 %: a lossy codec
#: spreads a clipped level over about that much).
PILEUP_HALF_WIDTH = 0.04
#: Pseudo-count added to the neighbours' count, so that a handful of peaks cannot make a pile-up.
PILEUP_PRIOR = 10.0
#: Levels are searched from this share of the top (the peak of rank max(5, n/200), which a codec's
#: overshoot of up to 1.8x the clipped level on a few peaks does not set) up to the largest peak.
PILEUP_SEARCH_FLOOR = 0.3
#: Grid step of the search, in natural-log amplitude.
PILEUP_SEARCH_STEP = 0.005


def _half_cycles(x: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(peak magnitude, negative) of every half-cycle of ``x`` of at least ``min_length`` samples."""
    if x.size == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool)
    negative = np.signbit(x)
    starts = np.concatenate([[0], np.flatnonzero(negative[1:] != negative[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [x.size]]))
    keep = lengths >= min_length
    return np.maximum.reduceat(np.abs(x), starts)[keep], negative[starts][keep]


def peak_pileup(samples: np.ndarray, rate: int) -> float:
    """How much the half-cycle peaks pile up at one level, both polarities together, with few peaks just
    below or anywhere above it: clipping at any level, after any codec, and not a voice's own peakiness.

    Clipping flattens every peak above its threshold to one level, the same
    for both polarities; turned down afterwards it is not at full scale (so a
    count of samples at full scale misses it), and a lossy codec spreads it
    by a few percent and overshoots it on a few peaks (MP3 at 128 kb/s: up
    to 1.8x). Speech's own peak amplitudes thin out towards the top, but a
    loud, steady vowel can put 15-30 peaks of one polarity within 2 % of the
    top: the share of peaks near the top, which this measured before, read
    clean Kokoro voices as clipped (up to 0.018 against a threshold of 0.01).

    For every level c (a log grid from :data:`PILEUP_SEARCH_FLOOR` of the top
    up to the largest peak) the half-cycle peaks (at least 1/8 ms long: not
    ripple) are counted per polarity in c*exp(+-w) (w =
    :data:`PILEUP_HALF_WIDTH`): P+ and P-; the neighbours N are the peaks of
    both polarities in the band just below, c*exp(-3w)..c*exp(-w), and all
    above c*exp(w). The score at c is ((sqrt(P+) + sqrt(P-))^2 / 2) /
    (N / 2 + :data:`PILEUP_PRIOR`): a pile counts fully only when both
    polarities share it. The result is the largest score over c. The median
    sample is subtracted first (not the mean: clipping asymmetric speech
    moves the mean), so a DC offset does not part the polarities' levels.

    Measured on joe, joe pitched up and the five Kokoro voices, peak 0.99,
    0.3 and 0.1, raw and through MP3 128/64 kb/s and AAC 96 kb/s, 3 s
    windows and whole clips of 2-12 s (14,280 clean pieces, 19,040 clipped):
    clean speech at most 1.57; clipped 3x or 4x (9.5/12 dB) then turned down
    6 or 10 dB at least 2.82 (median 15); clipped 2x (6 dB) median 6.6, 98.6 %
    above 2.0 (``build_dataset.max_peak_pileup``). ``tests/test_scoring.py``
    checks every voice. Missed: clipping followed by a high-pass of 40 Hz or
    more (it tilts the flat tops: 0.6-1.8). A steady pure tone scores high (a
    sine: 132). NaN for clips too short to tell (under 100 half-cycles).
    """
    x = np.asarray(samples, dtype=np.float32).ravel()
    if x.size < 2:
        return float("nan")
    x = x - np.float32(np.median(x))
    peaks, negative = _half_cycles(x, max(3, round(rate / 8000)))
    if peaks.size < 100:
        return float("nan")
    rank = max(5, peaks.size // 200)
    top = float(np.partition(peaks, peaks.size - rank)[peaks.size - rank])
    if top <= 0:
        return 0.0
    w = PILEUP_HALF_WIDTH
    low = PILEUP_SEARCH_FLOOR * top * np.exp(-3 * w)
    grid = np.arange(np.log(PILEUP_SEARCH_FLOOR * top), np.log(float(peaks.max())) + PILEUP_SEARCH_STEP,
                     PILEUP_SEARCH_STEP)
    piles, neighbours = [], 0.0
    for side in (peaks[~negative], peaks[negative]):
        levels = np.sort(np.log(side[side >= low]))

        def count(lo: float, hi: float) -> np.ndarray:
            return (np.searchsorted(levels, grid + hi) - np.searchsorted(levels, grid + lo)).astype(np.float64)

        piles.append(count(-w, w))
        neighbours = neighbours + count(-3 * w, -w) + count(w, np.inf)
    pile = (np.sqrt(piles[0]) + np.sqrt(piles[1])) ** 2 / 2
    return float(np.max(pile / (neighbours / 2 + PILEUP_PRIOR)))
