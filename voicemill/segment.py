"""Cut long recordings into utterance-sized clips at pauses.

The cut policy, in order:

1. webrtcvad marks every ``frame_ms`` frame of the 16 kHz signal as speech or
   not. Speech frames separated by less than ``min_pause_ms`` of non-speech
   belong to one *region*; a pause at least that long ends a region.
2. A region longer than ``max_duration_s`` is split at its longest internal
   pause (a shorter run of non-speech frames), recursively, so a cut never
   lands inside a word. A region with no internal pause at all is split at
   its quietest frame, which is the best guess left.
3. A region shorter than ``min_duration_s`` is merged with the nearer
   neighbour when the pause between them is short (under ``2 *
   min_pause_ms``) and the result still fits ``max_duration_s``; otherwise it
   is dropped and counted.
4. Each clip keeps ``padding_ms`` of the surrounding silence on both sides (but
   never more than half the pause to its neighbour), is resampled to the
   dataset rate, has its DC offset removed, and is loudness-normalised to
   ``target_lufs`` with pyloudnorm, with a peak ceiling of -1 dBFS.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import soxr
import webrtcvad

from voicemill.audio import frame_rms_db

_LOGGER = logging.getLogger(__name__)

VAD_RATE = 16000
PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS
CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class CutPolicy:
    vad_aggressiveness: int = 2
    frame_ms: int = 30
    min_pause_ms: int = 300
    padding_ms: int = 150
    min_duration_s: float = 1.0
    max_duration_s: float = 12.0

    def __post_init__(self):
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"segment.frame_ms must be 10, 20 or 30 (webrtcvad), got {self.frame_ms}")
        if not 0 <= self.vad_aggressiveness <= 3:
            raise ValueError(f"segment.vad_aggressiveness must be 0..3, got {self.vad_aggressiveness}")
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("segment.min_duration_s must be smaller than segment.max_duration_s")


@dataclass
class Region:
    """A span of speech in frames: [start, end)."""

    start: int
    end: int


def vad_flags(samples_16k: np.ndarray, policy: CutPolicy) -> np.ndarray:
    """webrtcvad speech flags, one per frame of ``policy.frame_ms``."""
    vad = webrtcvad.Vad(policy.vad_aggressiveness)
    frame = VAD_RATE * policy.frame_ms // 1000
    pcm = (np.clip(samples_16k, -1, 1) * 32767).astype("<i2")
    n = len(pcm) // frame
    flags = np.zeros(n, dtype=bool)
    buf = pcm[: n * frame].tobytes()
    step = frame * 2
    for i in range(n):
        flags[i] = vad.is_speech(buf[i * step : (i + 1) * step], VAD_RATE)
    return flags


def _runs(flags: np.ndarray, value: bool) -> list[tuple[int, int]]:
    """[start, end) runs of ``value`` in a boolean array."""
    mask = (flags == value).astype(np.int8)
    padded = np.concatenate([[0], mask, [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def speech_regions(flags: np.ndarray, policy: CutPolicy) -> list[Region]:
    """Runs of speech frames, joined across pauses shorter than ``min_pause_ms``."""
    min_pause = max(1, policy.min_pause_ms // policy.frame_ms)
    regions: list[Region] = []
    for start, end in _runs(flags, True):
        if regions and start - regions[-1].end < min_pause:
            regions[-1].end = end
        else:
            regions.append(Region(start, end))
    return regions


def split_long(region: Region, flags: np.ndarray, energy_db: np.ndarray, policy: CutPolicy) -> list[Region]:
    """Split a region longer than ``max_duration_s`` at its longest internal pause."""
    max_frames = int(policy.max_duration_s * 1000 / policy.frame_ms)
    if region.end - region.start <= max_frames:
        return [region]
    inner = flags[region.start : region.end]
    pauses = [(s, e) for s, e in _runs(inner, False) if s > 0 and e < len(inner)]
    if pauses:
        s, e = max(pauses, key=lambda p: (p[1] - p[0], -abs((p[0] + p[1]) / 2 - len(inner) / 2)))
        left = Region(region.start, region.start + s)
        right = Region(region.start + e, region.end)
    else:
        # No pause at all: cut at the quietest frame away from the edges.
        margin = max(1, len(inner) // 5)
        quiet = margin + int(np.argmin(energy_db[region.start + margin : region.end - margin]))
        left = Region(region.start, region.start + quiet)
        right = Region(region.start + quiet, region.end)
    return split_long(left, flags, energy_db, policy) + split_long(right, flags, energy_db, policy)


def merge_short(regions: list[Region], policy: CutPolicy) -> tuple[list[Region], int]:
    """Merge regions under ``min_duration_s`` into a close neighbour; drop the rest."""
    min_frames = int(policy.min_duration_s * 1000 / policy.frame_ms)
    max_frames = int(policy.max_duration_s * 1000 / policy.frame_ms)
    near = 2 * policy.min_pause_ms // policy.frame_ms
    out = list(regions)
    dropped = 0
    i = 0
    while i < len(out):
        r = out[i]
        if r.end - r.start >= min_frames:
            i += 1
            continue
        candidates = []
        if i > 0 and r.start - out[i - 1].end <= near and r.end - out[i - 1].start <= max_frames:
            candidates.append((r.start - out[i - 1].end, i - 1))
        if i + 1 < len(out) and out[i + 1].start - r.end <= near and out[i + 1].end - r.start <= max_frames:
            candidates.append((out[i + 1].start - r.end, i + 1))
        if candidates:
            _, j = min(candidates)
            lo, hi = sorted((i, j))
            out[lo] = Region(out[lo].start, out[hi].end)
            del out[hi]
            i = lo
        else:
            del out[i]
            dropped += 1
    return out, dropped


def plan_cuts(samples_16k: np.ndarray, policy: CutPolicy) -> tuple[list[tuple[float, float]], int]:
    """Clip boundaries in seconds (padding included) and the count of dropped regions."""
    flags = vad_flags(samples_16k, policy)
    frame = VAD_RATE * policy.frame_ms // 1000
    energy = frame_rms_db(samples_16k, frame)
    regions = []
    for region in speech_regions(flags, policy):
        regions.extend(split_long(region, flags, energy, policy))
    regions, dropped = merge_short(regions, policy)

    sec = policy.frame_ms / 1000
    pad = policy.padding_ms / 1000
    total = len(samples_16k) / VAD_RATE
    cuts = []
    for i, r in enumerate(regions):
        start, end = r.start * sec, r.end * sec
        gap_before = start - (regions[i - 1].end * sec if i else 0.0)
        gap_after = (regions[i + 1].start * sec if i + 1 < len(regions) else total) - end
        lo = start - min(pad, gap_before / 2 if i else gap_before)
        hi = end + min(pad, gap_after / 2 if i + 1 < len(regions) else gap_after)
        cuts.append((max(0.0, lo), min(total, hi)))
    return cuts, dropped


def measure(clip: np.ndarray, rate: int, meter: pyloudnorm.Meter) -> dict:
    """Quality measures of a clip before normalisation."""
    loudness = float(meter.integrated_loudness(clip.astype(np.float64))) if len(clip) > 0.4 * rate else float("-inf")
    return {
        "loudness_lufs": loudness if np.isfinite(loudness) else -70.0,
        "peak": float(np.max(np.abs(clip))) if clip.size else 0.0,
        "clipped_share": float(np.mean(np.abs(clip) >= CLIP_LEVEL)) if clip.size else 0.0,
    }


def normalise(clip: np.ndarray, rate: int, loudness_lufs: float, target_lufs: float) -> np.ndarray:
    """DC removal, loudness to ``target_lufs``, peak ceiling at -1 dBFS, 10 ms fades."""
    clip = clip - np.mean(clip)
    if loudness_lufs > -70.0:
        with warnings.catch_warnings():
            # pyloudnorm warns about peaks over 1.0; the ceiling below handles them.
            warnings.simplefilter("ignore", UserWarning)
            clip = pyloudnorm.normalize.loudness(clip.astype(np.float64), loudness_lufs, target_lufs)
    peak = float(np.max(np.abs(clip))) if clip.size else 0.0
    if peak > PEAK_CEILING:
        clip = clip * (PEAK_CEILING / peak)
    fade = min(len(clip) // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        clip[:fade] *= ramp
        clip[-fade:] *= ramp[::-1]
    return clip.astype(np.float32)


def segment_audio(samples: np.ndarray, rate: int, policy: CutPolicy, target_lufs: float):
    """Cut a recording at ``rate`` into clips.

    Returns ``(clips, dropped)``: ``clips`` is a list of ``(start_s, end_s,
    normalised clip, measures)`` and ``dropped`` counts short regions dropped.
    """
    samples_16k = soxr.resample(samples, rate, VAD_RATE, quality="HQ") if rate != VAD_RATE else samples
    cuts, dropped = plan_cuts(samples_16k, policy)
    meter = pyloudnorm.Meter(rate)
    clips = []
    for start, end in cuts:
        clip = samples[int(start * rate) : int(end * rate)].astype(np.float64)
        measures = measure(clip, rate, meter)
        clips.append((start, end, normalise(clip, rate, measures["loudness_lufs"], target_lufs), measures))
    return clips, dropped
