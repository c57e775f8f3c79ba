"""Audio input and output: decoding with ffmpeg, WAV writing, simple measures.

All audio inside voicemill is float32 mono in [-1, 1] unless a function says
otherwise.
"""

from __future__ import annotations

import functools

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


#: A half-cycle peak within this fraction of the clip's top counts as piled up (see :func:`peak_pileup`).
PILEUP_WITHIN = 0.10
#: Peaks are taken below this frequency: the voice's strong low harmonics, which clipping flattens, without
#: the high-frequency ripple that a lossy codec adds on top of the flattened peaks.
PILEUP_LOWPASS_HZ = 4000.0
#: The top is the peak of this rank from the largest, so that a codec's overshoot on a few peaks does not set it.
PILEUP_TOP_RANK = 5


def half_cycle_peaks(samples: np.ndarray, min_length: int = 3) -> np.ndarray:
    """The largest magnitude of every half-cycle (run between zero crossings) of at least ``min_length`` samples."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    negative = np.signbit(x)
    starts = np.concatenate([[0], np.flatnonzero(negative[1:] != negative[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [x.size]]))
    return np.maximum.reduceat(np.abs(x), starts)[lengths >= min_length]


@functools.cache
def _pileup_lowpass(rate: int) -> np.ndarray:
    """The low-pass :func:`peak_pileup` reads peaks through, designed once per rate."""
    from scipy.signal import butter

    return butter(4, PILEUP_LOWPASS_HZ, fs=rate, output="sos")


def peak_pileup(samples: np.ndarray, rate: int) -> float:
    """The share of half-cycle peaks within 10 % of the clip's top: clipping at any level, after any codec.

    Clipping flattens every peak above its threshold to one level. Turned
    down afterwards the level is no longer full scale (so a count of samples
    at full scale misses it), and a lossy codec turns the flat tops into
    ripples and overshoots (so exact flat runs are gone too), but the peaks
    still pile up within a few percent of one level, where speech's own
    peaks thin out towards the top. The peaks are read below
    :data:`PILEUP_LOWPASS_HZ`, where a codec's ripple does not reach (a
    64 kb/s MP3 hid most of the pile-up above it). Measured on 3 s windows
    of Piper speech (``tests/test_scoring.py``): clean
    at most 0.0034 at any level, raw or through MP3 (64/128 kb/s) and AAC
    (96 kb/s); clipped 2x (6 dB) then turned down 6 or 10 dB 0.007-0.009,
    clipped 3x at least 0.021, 4x at least 0.025. On the demo: clean clips
    at most 0.005, the call-in's clipped passage 0.018, the kitchen table's
    (clipped 4x, down 8 dB, 64 kb/s MP3) 0.032. Clipping by less than about
    6 dB is within clean speech's spread and is not detected. NaN for clips
    too short to tell (under 100 half-cycles).
    """
    from scipy.signal import sosfiltfilt

    x = np.asarray(samples, dtype=np.float64)
    if x.size > 30 and rate > 2 * PILEUP_LOWPASS_HZ:
        x = sosfiltfilt(_pileup_lowpass(rate), x)
    peaks = half_cycle_peaks(x)
    if peaks.size < 100:
        return float("nan")
    top = np.partition(peaks, peaks.size - PILEUP_TOP_RANK)[peaks.size - PILEUP_TOP_RANK]
    if top <= 0:
        return 0.0
    return float(np.mean(peaks >= (1.0 - PILEUP_WITHIN) * top))
