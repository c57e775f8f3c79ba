"""Cut long recordings into utterance-sized clips at pauses, measure every clip.

The cut policy, in order:

1. webrtcvad marks every ``frame_ms`` frame of the 16 kHz signal as speech or
   not. A run of speech frames shorter than ``min_speech_ms`` is a blip (a
   click, a cough) and counts as non-speech. Speech frames separated by less
   than ``min_pause_ms`` of non-speech belong to one *region*; a pause at
   least that long ends a region. A steady sound (a music intro, a hum:
   :func:`steady_beds`) is not speech, and frames close to the local noise
   floor are pause (:func:`gate_by_level`).
2. A region in which the voice changes at a pause of at least
   ``turn_pause_ms`` is cut there (:func:`split_turns`: a guest answering
   quickly), when speaker scoring is on.
3. A region longer than ``max_duration_s`` is split at its longest internal
   pause (a shorter run of non-speech frames), recursively, so a cut never
   lands inside a word. A region with no internal pause at all is split at
   its quietest frame, which is the best guess left.
4. A region shorter than ``min_duration_s`` is merged with the nearer
   neighbour when the pause between them is short (under ``2 *
   min_pause_ms``) and the result still fits ``max_duration_s``; otherwise it
   is dropped and counted.
5. Each clip keeps ``padding_ms`` of the surrounding audio on both sides (but
   never more than half the pause to its neighbour), so no word loses its
   onset or its tail.

Streaming: a source is decoded by ffmpeg into mono float32 blocks at its own
rate and resampled block by block with soxr's streaming resampler twice: to
16 kHz for the VAD (LQ), and to the dataset rate (HQ) into a spill file on disk. The
clip pass then reads each clip from the spill file. Memory therefore does not
grow with the length of a source.

Each clip has its DC offset removed, is loudness-normalised to ``target_lufs``
(BS.1770 loudness from :class:`LoudnessMeter`, pyloudnorm's meter
vectorised) under a true-peak ceiling (4x oversampled peak at
``true_peak_dbfs``), gets ``fade_ms`` fades, and is written as 16-bit PCM.

Measures per clip (before normalisation unless noted): integrated loudness,
sample peak, share of clipped samples (at full scale), the peak pile-up that
clipping leaves at any level, also after lossy encoding
(:func:`voicemill.audio.peak_pileup`), share of non-speech
VAD frames, an SNR estimate from frame levels (the loud half over the
quietest tenth), the effective bandwidth (highest frequency within 50 dB of
the spectrum's peak), DNSMOS SIG/BAK/OVRL of the normalised clip (speechmos),
and a resemblyzer speaker embedding: its similarity to the target speaker (a
reference recording, or else the dominant speaker of the source, found by
clustering), and its consistency (the lowest similarity of the 1.6 s partial
embeddings to the clip's own embedding; low means two voices in one clip).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
import soxr
import webrtcvad
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.ndimage import percentile_filter, uniform_filter1d
from scipy.signal import sosfilt

from voicemill import executor, manifest, params, scoring, truth
from voicemill.audio import AudioError, decode, frame_rms_db, peak_pileup, probe, require_ffmpeg, write_wav
from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_dir, naming, write_json
from voicemill.params import defaults_from

_LOGGER = logging.getLogger(__name__)

VAD_RATE = 16000
CLIP_LEVEL = 0.999
SNR_CAP_DB = 60.0
BANDWIDTH_RANGE_DB = 50.0
FLOOR_WINDOW_S = 3.0
SILENCE_RANGE_DB = 70.0
BED_WINDOW_S = 0.6
BED_STD_DB = 3.0
BED_MIN_S = 1.0
CLIP_THREADS = 2
TRUE_PEAK_PAD = 128  # samples around the loud stretches that true_peak oversamples
TRUE_PEAK_MARGIN = 10 ** (-3.0 / 20)  # inter-sample peaks exceed sample peaks by less
NAN = float("nan")


@dataclass(frozen=True)
@defaults_from('segment')
class CutPolicy:
    vad_aggressiveness: int
    frame_ms: int
    min_speech_ms: int
    min_pause_ms: int
    padding_ms: int
    min_duration_s: float
    max_duration_s: float
    energy_gate_db: float
    turn_pause_ms: int
    turn_change_below: float

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


@dataclass(frozen=True)
class Cut:
    """A clip to cut: its bounds with padding, and the speech inside, in seconds."""

    start_s: float
    end_s: float
    speech_start_s: float
    speech_end_s: float


def _runs(flags: np.ndarray, value: bool) -> list[tuple[int, int]]:
    """[start, end) runs of ``value`` in a boolean array."""
    mask = (flags == value).astype(np.int8)
    padded = np.concatenate([[0], mask, [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def drop_blips(flags: np.ndarray, policy: CutPolicy) -> np.ndarray:
    """Speech runs shorter than ``min_speech_ms`` become non-speech."""
    min_run = policy.min_speech_ms // policy.frame_ms
    if min_run <= 1:
        return flags
    out = flags.copy()
    for start, end in _runs(flags, True):
        if end - start < min_run:
            out[start:end] = False
    return out


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


def gate_by_level(flags: np.ndarray, energy_db: np.ndarray, policy: CutPolicy) -> np.ndarray:
    """Speech flags with frames close to the local noise floor turned to non-speech.

    webrtcvad keeps flagging speech through the pauses of a recording under
    steady noise or a music bed, so sentences run together. The local floor
    is the 5th percentile of frame levels over the surrounding
    ``2 * FLOOR_WINDOW_S`` (but no lower than :data:`SILENCE_RANGE_DB` under
    the source's 95th percentile); a frame less than ``energy_gate_db`` above it is a
    pause, and a run of them at least ``min_pause_ms`` long then ends a region
    like any pause. In clean recordings the floor is near digital silence and
    the gate changes nothing. 0 turns it off.
    """
    if policy.energy_gate_db <= 0 or energy_db.size == 0:
        return flags
    size = 2 * int(FLOOR_WINDOW_S * 1000 / policy.frame_ms) + 1
    floor = percentile_filter(energy_db, 5, size=size, mode="nearest")
    # Where the pauses are digital silence the floor is too, and a codec's
    # faint ringing next to a word would pass for speech: no floor sits more
    # than SILENCE_RANGE_DB below the source's loud frames.
    floor = np.maximum(floor, np.percentile(energy_db, 95) - SILENCE_RANGE_DB)
    return flags & (energy_db > floor + policy.energy_gate_db)


def steady_beds(energy_db: np.ndarray, policy: CutPolicy) -> np.ndarray:
    """Frames inside a steady sound: a run of at least :data:`BED_MIN_S` over which the level
    varies by less than :data:`BED_STD_DB` (standard deviation over :data:`BED_WINDOW_S`).

    Speech rises and falls with every syllable; a music intro, a hum or a
    steady noise does not, though webrtcvad often takes them for speech.
    Such a run is no speech (a pause), so a music intro does not open the
    first clip and make it a two-voice clip.
    """
    size = max(3, int(BED_WINDOW_S * 1000 / policy.frame_ms))
    level = np.maximum(energy_db, -100.0)
    mean = uniform_filter1d(level, size, mode="nearest")
    std = np.sqrt(np.maximum(uniform_filter1d(level**2, size, mode="nearest") - mean**2, 0.0))
    steady = std < BED_STD_DB
    out = np.zeros_like(steady)
    for start, end in _runs(steady, True):
        if (end - start) * policy.frame_ms >= BED_MIN_S * 1000:
            out[start:end] = True
    return out


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


def cuts_from_regions(regions: list[Region], total_s: float, policy: CutPolicy,
                      vad_flags: np.ndarray | None = None) -> list[Cut]:
    """Clip boundaries: each region with padding each side, at most half the pause to a neighbour.

    The padding is ``padding_ms``, or more where webrtcvad heard speech
    further out than the level gate (``vad_flags``, before gating): a soft
    word ending under noise stays in the clip.
    """
    sec = policy.frame_ms / 1000
    pad = policy.padding_ms / 1000
    cuts = []
    for i, r in enumerate(regions):
        start, end = r.start * sec, min(total_s, r.end * sec)
        pad_lo = pad_hi = pad
        if vad_flags is not None and vad_flags.size:
            lo_f, hi_f = r.start, r.end
            while lo_f > 0 and vad_flags[lo_f - 1]:
                lo_f -= 1
            while hi_f < len(vad_flags) and vad_flags[hi_f]:
                hi_f += 1
            pad_lo, pad_hi = max(pad, (r.start - lo_f) * sec), max(pad, (hi_f - r.end) * sec)
        gap_before = start - (regions[i - 1].end * sec if i else 0.0)
        gap_after = (regions[i + 1].start * sec if i + 1 < len(regions) else total_s) - end
        lo = start - min(pad_lo, gap_before / 2 if i else gap_before)
        hi = end + min(pad_hi, gap_after / 2 if i + 1 < len(regions) else gap_after)
        cuts.append(Cut(max(0.0, lo), min(total_s, hi), start, end))
    return cuts


#: Embeds the speech of frames [start, end) of a source: one speaker embedding (unit length).
Embedder = Callable[[int, int], np.ndarray]


#: Seconds of speech either side of a pause whose speaker embeddings are compared.
TURN_WINDOW_S = 2.0
#: ... but at least this much, where there is: a window stops at the next pause only after it.
TURN_MIN_WINDOW_S = 1.0


def turn_pauses(region: Region, flags: np.ndarray, policy: CutPolicy) -> list[tuple[int, int]]:
    """Pauses of at least ``turn_pause_ms`` inside a region, as [start, end) frames,
    at least ``min_duration_s`` from its edges."""
    turn = max(1, policy.turn_pause_ms // policy.frame_ms)
    edge = int(policy.min_duration_s * 1000 / policy.frame_ms)
    inner = flags[region.start : region.end]
    return [(region.start + s, region.start + e) for s, e in _runs(inner, False)
            if s >= edge and len(inner) - e >= edge and e - s >= turn]


def split_turns(region: Region, flags: np.ndarray, policy: CutPolicy, embed: Embedder) -> list[Region]:
    """Split a region where the voice changes, at the pause nearest to the change.

    For every pause of at least ``turn_pause_ms``, the speaker embeddings of
    up to :data:`TURN_WINDOW_S` of speech before it and after it are compared;
    the region is cut at each pause where they are less alike (cosine) than
    ``turn_change_below`` and less alike than at any other pause within that
    window (the change itself, not a comma next to it). A guest who answers
    within ``min_pause_ms`` lands in the host's region; cut there, each
    speaker's sentences survive as their own clips instead of the two-voice
    clip being dropped whole.
    """
    pauses = turn_pauses(region, flags, policy)
    if not pauses:
        return [region]
    # The speech after one pause is often the speech before the next: embed each span once.
    embed = functools.lru_cache(maxsize=None)(embed)
    window = int(TURN_WINDOW_S * 1000 / policy.frame_ms)
    least = int(TURN_MIN_WINDOW_S * 1000 / policy.frame_ms)
    speech = np.flatnonzero(flags[region.start : region.end]) + region.start
    bounds = [region.start] + [x for p in pauses for x in p] + [region.end]
    scores = []
    for k, (s, e) in enumerate(pauses):
        # Speech back to the previous pause (and on, while there is less than TURN_MIN_WINDOW_S), likewise after.
        before = speech[speech < s][-window:]
        lo = next((b for b in bounds[2 * k::-2] if np.sum(before >= b) >= least), before[0])
        after = speech[speech >= e][:window]
        hi = next((b for b in bounds[2 * k + 3::2] if np.sum(after < b) >= least), after[-1] + 1)
        scores.append(float(np.dot(embed(int(max(lo, before[0])), s), embed(e, int(min(hi, after[-1] + 1))))))
    cuts = []
    for k, ((s, e), score) in enumerate(zip(pauses, scores)):
        near = [scores[m] for m, (s2, e2) in enumerate(pauses) if m != k and abs(s2 - s) < window]
        if score < policy.turn_change_below and all(score <= x for x in near):
            cuts.append((s, e))
    _LOGGER.debug("region %d-%d: pause scores %s, cut at %s", region.start, region.end,
                  [round(x, 2) for x in scores], cuts)
    out, start = [], region.start
    for s, e in cuts:
        out.append(Region(start, s))
        start = e
    out.append(Region(start, region.end))
    return out


def plan_regions(flags: np.ndarray, energy_db: np.ndarray, policy: CutPolicy,
                 embed: Embedder | None = None) -> tuple[list[Region], int, np.ndarray]:
    """Speech regions after gating, split at turns (with ``embed``), long ones split, short ones merged
    or dropped.

    Also returns the VAD flags before the level gate (blips dropped), which
    :func:`cuts_from_regions` uses to widen the padding.
    """
    vad = drop_blips(flags & ~steady_beds(energy_db, policy), policy)
    gated = drop_blips(gate_by_level(vad, energy_db, policy), policy)
    regions = []
    for region in speech_regions(gated, policy):
        turns = split_turns(region, gated, policy, embed) if embed is not None and policy.turn_pause_ms else [region]
        for turn in turns:
            regions.extend(split_long(turn, gated, energy_db, policy))
    regions, dropped = merge_short(regions, policy)
    return regions, dropped, vad


# ------------------------------------------------------------- streaming


#: Blocks decoded ahead of the one being processed (each ``block_s`` of audio at the source rate).
READ_AHEAD = 2


class BlockReader:
    """Decode a media file with ffmpeg into float32 mono blocks at the file's own rate.

    Nothing but one block is held in memory, so a two-hour 48 kHz stereo
    source costs the same memory as a two-minute one.
    """

    def __init__(self, path: Path, block_s: float = 30.0):
        self.path = Path(path)
        if not self.path.exists():
            raise AudioError(f"{self.path}: file not found")
        info = probe(self.path)
        self.rate = info["sample_rate"]
        if self.rate <= 0:
            raise AudioError(f"{self.path}: no sample rate in the audio stream")
        self.block = max(1, int(block_s * self.rate))

    def __iter__(self) -> Iterator[np.ndarray]:
        """The blocks in order. A thread reads ahead (up to :data:`READ_AHEAD` blocks), so ffmpeg decodes
        the next block while the caller resamples and runs the VAD on this one."""
        cmd = [require_ffmpeg(), "-nostdin", "-v", "error", "-i", str(self.path), "-vn", "-ac", "1",
               "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            blocks: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
            stop = threading.Event()

            def put(item) -> None:
                while not stop.is_set():
                    try:
                        blocks.put(item, timeout=0.1)
                        return
                    except queue.Full:
                        continue

            def pump() -> None:
                try:
                    while not stop.is_set():
                        data = proc.stdout.read(self.block * 4)
                        put(data)
                        if not data:
                            return
                except Exception as e:  # handed to the consumer
                    put(e)

            reader = threading.Thread(target=pump, name="ffmpeg-reader", daemon=True)
            reader.start()
            got, finished = 0, False
            try:
                while True:
                    data = blocks.get()
                    if isinstance(data, Exception):
                        raise AudioError(f"{self.path}: reading ffmpeg's output failed: {data}") from data
                    if not data:
                        finished = True
                        break
                    data = data[: len(data) // 4 * 4]
                    got += len(data)
                    yield np.frombuffer(data, dtype=np.float32)
            finally:
                stop.set()
                if not finished:  # the caller stopped early, or an error: ffmpeg need not go on
                    proc.kill()
                reader.join()
                proc.stdout.close()
                code = proc.wait()
            if code != 0:
                err.seek(0)
                raise AudioError(f"{self.path}: ffmpeg could not decode it: "
                                 f"{err.read().decode(errors='replace').strip()}")
            if got == 0:
                raise AudioError(f"{self.path}: decoded to no audio (empty or corrupt file)")


class VadStream:
    """webrtcvad flags and frame levels, fed block by block at 16 kHz."""

    def __init__(self, policy: CutPolicy):
        self.vad = webrtcvad.Vad(policy.vad_aggressiveness)
        self.frame = VAD_RATE * policy.frame_ms // 1000
        self.rest = np.zeros(0, dtype=np.float32)
        self.flags: list[np.ndarray] = []
        self.energy: list[np.ndarray] = []

    def feed(self, samples: np.ndarray) -> None:
        samples = np.concatenate([self.rest, samples.astype(np.float32, copy=False)])
        n = len(samples) // self.frame
        self.rest = samples[n * self.frame :]
        if n == 0:
            return
        frames = samples[: n * self.frame]
        pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes()
        step, is_speech = self.frame * 2, self.vad.is_speech
        self.flags.append(np.fromiter((is_speech(pcm[i * step : (i + 1) * step], VAD_RATE) for i in range(n)),
                                      dtype=bool, count=n))
        self.energy.append(frame_rms_db(frames, self.frame))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.flags:
            return np.zeros(0, dtype=bool), np.zeros(0)
        return np.concatenate(self.flags), np.concatenate(self.energy)


@dataclass
class Scan:
    """What one streaming pass over a source leaves: VAD flags, levels, and the audio on disk."""

    flags: np.ndarray
    energy_db: np.ndarray
    samples: int  # at the clip rate, in the spill file


def scan(path: Path, rate: int, policy: CutPolicy, spill: Path, block_s: float = 30.0) -> Scan:
    """Decode ``path`` block by block: VAD at 16 kHz, and the audio at ``rate`` spilled to ``spill``.

    Both rates come from soxr's streaming resampler, from the source's own
    rate (HQ for the clips, LQ for the VAD: it only needs the speech band);
    the spill file holds raw float32 mono for the clip pass.
    """
    reader = BlockReader(path, block_s)

    def stream(to_rate, quality):
        if reader.rate == to_rate:
            return None
        return soxr.ResampleStream(reader.rate, to_rate, 1, dtype="float32", quality=quality)

    to_clip, to_vad = stream(rate, "HQ"), stream(VAD_RATE, "LQ")
    vad = VadStream(policy)
    written = 0
    with open(spill, "wb") as f, naming(spill):

        def push(block: np.ndarray, last: bool) -> None:
            nonlocal written
            out = to_clip.resample_chunk(block, last=last) if to_clip else block
            f.write(np.ascontiguousarray(out, dtype=np.float32).tobytes())
            written += len(out)
            vad.feed(to_vad.resample_chunk(block, last=last) if to_vad else block)

        for block in reader:
            push(block, False)
        push(np.zeros(0, dtype=np.float32), True)
    flags, energy = vad.result()
    return Scan(flags, energy, written)


# ------------------------------------------------------------ clip measures


def true_peak(clip: np.ndarray, rate: int, above: float | None = None) -> float:
    """Peak of the signal 4x oversampled (the inter-sample peak a DAC would produce).

    Oversampling raises a peak by at most about 3 dB, so :func:`normalise`
    only calls this for clips whose sample peak is within 3 dB of the ceiling,
    and with ``above`` only the stretches around samples louder than that are
    oversampled (:data:`TRUE_PEAK_PAD` samples either side: the resampler's
    filter is shorter, so the peak is the whole-clip value to float precision).
    """
    if clip.size == 0:
        return 0.0
    clip = clip.astype(np.float32, copy=False)
    peak = float(np.max(np.abs(clip)))
    if above is None:
        spans = [(0, clip.size - 1)]
    else:
        loud = np.flatnonzero(np.abs(clip) > above)
        if loud.size == 0:
            return peak
        gaps = np.flatnonzero(np.diff(loud) > 2 * TRUE_PEAK_PAD)
        spans = list(zip(loud[np.r_[0, gaps + 1]], loud[np.r_[gaps, loud.size - 1]]))
    for first, last in spans:
        lo, hi = max(0, first - TRUE_PEAK_PAD), min(clip.size, last + TRUE_PEAK_PAD + 1)
        over = soxr.resample(clip[lo:hi], rate, rate * 4, quality="HQ")
        peak = max(peak, float(np.max(np.abs(over))))
    return peak


def snr_db(energy_db: np.ndarray) -> float:
    """SNR estimate from frame levels: loud half over the quietest tenth of frames, in dB."""
    if energy_db.size < 4:
        return float("nan")
    power = np.sort(10 ** (energy_db / 10))
    noise = float(np.mean(power[: max(1, len(power) // 10)]))
    signal = float(np.mean(power[len(power) // 2 :]))
    if signal <= noise:
        return 0.0
    return float(np.clip(10 * np.log10((signal - noise) / max(noise, 1e-12)), 0.0, SNR_CAP_DB))


def bandwidth_hz(clip: np.ndarray, rate: int) -> float:
    """Effective bandwidth: the highest frequency whose level is within 50 dB of the spectrum's peak.

    A clip upsampled from telephone audio reads about 4000 Hz; full-band
    speech at 22050 Hz reads close to the Nyquist frequency.
    """
    if clip.size < 1024:
        return float("nan")
    n = 1024
    frames = np.lib.stride_tricks.sliding_window_view(clip.astype(np.float32), n)[:: n // 2]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = scipy.fft.rfft(frames * np.hanning(n).astype(np.float32), axis=1)  # float32 in, complex64 out
    psd = np.mean(spectrum.real**2 + spectrum.imag**2, axis=0, dtype=np.float64)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    level = 10 * np.log10(np.maximum(psd, 1e-20))
    level = np.convolve(np.pad(level, 2, mode="edge"), np.ones(5) / 5, mode="valid")  # smooth single bins
    above = np.flatnonzero(level > level.max() - BANDWIDTH_RANGE_DB)
    return float(freqs[above[-1]]) if above.size else 0.0


class LoudnessMeter:
    """ITU-R BS.1770-4 integrated loudness of mono audio, as ``pyloudnorm.Meter`` measures it, vectorised.

    The same K-weighting filters (pyloudnorm's coefficients, in float64) and
    the same 400 ms blocks at 75% overlap with absolute (-70 LUFS) and
    relative (-10 LU) gating; block energies come from one cumulative sum
    instead of a Python loop per block (pyloudnorm's loop was a third of the
    clip pass). Agrees with pyloudnorm to 1e-9 LU (tests).
    """

    BLOCK_S = 0.4
    STEP = 0.25  # of a block: 75% overlap

    def __init__(self, rate: int):
        from pyloudnorm.iirfilter import IIRfilter

        self.rate = rate
        stages = (IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
                  IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"))
        # Both biquads as one second-order-sections filter (pyloudnorm runs two lfilter calls; same result).
        self.sos = np.array([np.concatenate([f.b, f.a]) for f in stages])
        self.gain = float(np.prod([f.passband_gain for f in stages]))

    def integrated_loudness(self, clip: np.ndarray) -> float:
        x = np.asarray(clip, dtype=np.float64)
        if len(x) < self.BLOCK_S * self.rate:
            return float("-inf")
        x = self.gain * sosfilt(self.sos, x)
        block = self.BLOCK_S * self.rate
        blocks = int(np.round((len(x) / self.rate - self.BLOCK_S) / (self.BLOCK_S * self.STEP))) + 1
        j = np.arange(blocks)
        lower = (self.BLOCK_S * (j * self.STEP) * self.rate).astype(np.int64)
        upper = np.minimum((self.BLOCK_S * (j * self.STEP + 1) * self.rate).astype(np.int64), len(x))
        energy = np.concatenate([[0.0], np.cumsum(x * x)])
        z = (energy[upper] - energy[lower]) / block
        with np.errstate(divide="ignore"):
            level = -0.691 + 10 * np.log10(z)
            above = level >= -70.0
            if not above.any():
                return float("-inf")
            relative = -0.691 + 10 * np.log10(np.mean(z[above])) - 10.0
            gated = (level > relative) & (level > -70.0)
            return float(-0.691 + 10 * np.log10(np.mean(z[gated]))) if gated.any() else float("-inf")


def measure(clip: np.ndarray, rate: int, meter: LoudnessMeter) -> dict:
    """Level measures of a clip before normalisation."""
    loudness = meter.integrated_loudness(clip)
    level = np.abs(clip)
    return {
        "loudness_lufs": loudness if np.isfinite(loudness) else -70.0,
        "peak": float(np.max(level)) if clip.size else 0.0,
        "clipped_share": float(np.mean(level >= CLIP_LEVEL)) if clip.size else 0.0,
        "peak_pileup": peak_pileup(clip, rate),
    }


def normalise(clip: np.ndarray, rate: int, loudness_lufs: float, target_lufs: float,
              true_peak_dbfs: float = -1.0, fade_ms: int = 10) -> np.ndarray:
    """DC removal, loudness to ``target_lufs``, a true-peak ceiling, short fades."""
    clip = clip.astype(np.float64) - np.mean(clip)
    if loudness_lufs > -70.0:
        # The gain pyloudnorm.normalize.loudness applies, without its over-1.0 warning (the ceiling below
        # handles peaks) and the warnings filter that would need, which is not thread-safe.
        clip = np.power(10.0, (target_lufs - loudness_lufs) / 20.0) * clip
    ceiling = 10 ** (true_peak_dbfs / 20)
    peak = float(np.max(np.abs(clip))) if clip.size else 0.0
    if peak > ceiling * TRUE_PEAK_MARGIN:  # within 3 dB of the ceiling: oversample to know
        peak = true_peak(clip, rate, above=ceiling * TRUE_PEAK_MARGIN)
    if peak > ceiling:
        clip = clip * (ceiling / peak)
    fade = min(len(clip) // 2, rate * fade_ms // 1000)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        clip[:fade] *= ramp
        clip[-fade:] *= ramp[::-1]
    return clip.astype(np.float32)


def consistency(partials: np.ndarray, min_windows: int = 2) -> float:
    """How much a clip sounds like one voice: 1.0, or lower when the voice changes.

    For every split of the clip's partial windows (1.6 s each, about 0.8 s
    apart) into a before and an after of at least ``min_windows`` each, the
    cosine similarity of the two mean embeddings; the lowest wins. A change of
    speaker at any point gives a low value at that split; clips with fewer
    than ``2 * min_windows`` windows (under about 4 s) read 1.0.
    """
    lowest = 1.0
    for k in range(min_windows, len(partials) - min_windows + 1):
        lowest = min(lowest, scoring.cosine(partials[:k].mean(axis=0), partials[k:].mean(axis=0)))
    return float(lowest)


@functools.cache
def speaker_encoder() -> scoring.SpeakerEncoder:
    """resemblyzer's encoder, loaded once per process (clip scoring and the reference share it).

    It runs on one thread (``voicemill.ge2e``): identical numbers whether
    sources run serially or in workers, and no torch in a segment worker.
    """
    return scoring.SpeakerEncoder()


class Scorers:
    """DNSMOS and the speaker encoder, loaded once per process and only when asked for."""

    def __init__(self, dnsmos: bool, speaker: bool):
        self.dnsmos = dnsmos
        self.encoder = speaker_encoder() if speaker else None

    def __call__(self, clip: np.ndarray, rate: int) -> tuple[dict, np.ndarray | None]:
        out = {}
        audio_16k = scoring.to_16k(clip, rate)
        if self.dnsmos:
            d = scoring.dnsmos_p835(audio_16k, VAD_RATE)
            out.update({k: round(d[k], 4) for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")})
        embedding = None
        if self.encoder is not None:
            embedding, partials = self.encoder.embed_partials(audio_16k, VAD_RATE)
            out["speaker_consistency"] = round(consistency(partials), 4)
        return out, embedding


_SCORERS: dict[tuple[bool, bool], Scorers] = {}


def scorers(dnsmos: bool, speaker: bool) -> Scorers:
    key = (dnsmos, speaker)
    if key not in _SCORERS:
        _SCORERS[key] = Scorers(dnsmos, speaker)
    return _SCORERS[key]


# ------------------------------------------------------------- one source


@dataclass(frozen=True)
@defaults_from('segment')
class ClipOptions:
    target_lufs: float
    true_peak_dbfs: float
    fade_ms: int
    block_s: float
    dnsmos: bool
    speaker: bool
    speaker_change_below: float


@dataclass
class SourceResult:
    source_id: str
    rows: list[dict]
    embeddings: np.ndarray | None  # one row per clip, when speaker scoring is on
    dropped: int
    duration_s: float
    speech_s: float


def segment_source(source_id: str, audio: Path, out_dir: Path, rate: int, policy: CutPolicy, opts: ClipOptions,
                   source_text: str = "") -> SourceResult:
    """Cut one source into ``out_dir/wavs/<source_id>_NNNN.wav``; the clips' manifest rows.

    Two passes, neither holding the source in memory: a streaming scan (VAD
    at 16 kHz, the audio at ``rate`` spilled to a temporary file next to the
    clips), then one read per clip from the spill file, on two threads.
    """
    spill = out_dir / f".{source_id}.f32"
    try:
        sc = scan(audio, rate, policy, spill, opts.block_s)
        total_s = sc.samples / rate
        frame_s = policy.frame_ms / 1000
        fd = os.open(spill, os.O_RDONLY)
        try:
            done, dropped = _cut_and_measure(sc, fd, total_s, frame_s, source_id, out_dir, rate, policy, opts,
                                             source_text)
        finally:
            os.close(fd)
    finally:
        spill.unlink(missing_ok=True)
    rows = [row for row, _ in done]
    embeddings = [e for _, e in done if e is not None]
    speech_s = float(np.sum(sc.flags)) * frame_s
    return SourceResult(source_id, rows, np.array(embeddings) if embeddings else None, dropped, total_s, speech_s)


def _cut_and_measure(sc: Scan, fd: int, total_s: float, frame_s: float, source_id: str, out_dir: Path, rate: int,
                     policy: CutPolicy, opts: ClipOptions, source_text: str) -> tuple[list, int]:
    """Plan the cuts of a scanned source, then cut, measure, normalise and write each clip (reading the
    audio from the spill file ``fd``); each clip's (row, embedding) and the short regions dropped."""

    def embed(start: int, end: int) -> np.ndarray:
        a, b = round(start * frame_s * rate), min(sc.samples, round(end * frame_s * rate))
        e = speaker_encoder().embed(np.frombuffer(os.pread(fd, (b - a) * 4, a * 4), dtype=np.float32), rate)
        return e / (np.linalg.norm(e) + 1e-12)

    regions, dropped, vad_flags = plan_regions(sc.flags, sc.energy_db, policy, embed if opts.speaker else None)
    cuts = cuts_from_regions(regions, total_s, policy, vad_flags)
    score = scorers(opts.dnsmos, opts.speaker) if (opts.dnsmos or opts.speaker) else None
    meter = LoudnessMeter(rate)
    lock = threading.Lock()

    def one(i: int) -> tuple[dict, np.ndarray | None]:
        cut = cuts[i]
        a, b = round(cut.start_s * rate), round(cut.end_s * rate)
        clip = np.frombuffer(os.pread(fd, (b - a) * 4, a * 4), dtype=np.float32)
        fa = int(cut.start_s / frame_s)
        fb = max(fa + 1, int(cut.end_s / frame_s))
        measures = measure(clip, rate, meter)
        out = normalise(clip, rate, measures["loudness_lufs"], opts.target_lufs, opts.true_peak_dbfs,
                        opts.fade_ms)
        clip_id = f"{source_id}_{i:04d}"
        path = f"wavs/{clip_id}.wav"
        write_wav(out_dir / path, out, rate)
        row = {
            "clip_id": clip_id, "source_id": source_id, "path": path,
            "start_s": round(cut.start_s, 3), "end_s": round(cut.end_s, 3),
            "speech_start_s": round(cut.speech_start_s, 3), "speech_end_s": round(cut.speech_end_s, 3),
            "duration_s": round(len(out) / rate, 3), "sample_rate": rate,
            "source_text": source_text if source_text and len(cuts) == 1 else "",
            **{k: round(v, 4) for k, v in measures.items()},
            "silence_share": round(1.0 - float(np.mean(sc.flags[fa:fb])) if fb > fa else 1.0, 4),
            "snr_db": round(snr_db(sc.energy_db[fa:fb]), 2),
            "bandwidth_hz": round(bandwidth_hz(clip, rate), 1),
            "dnsmos_sig": NAN, "dnsmos_bak": NAN, "dnsmos_ovrl": NAN,
            "speaker_similarity": NAN, "speaker_consistency": NAN, "speaker_change": False,
            "speaker_reference": "",
        }
        embedding = None
        if score is not None:
            with lock:  # the models run one clip at a time; the rest of the work overlaps
                scores, embedding = score(out, rate)
            row.update(scores)
            if embedding is not None:
                row["speaker_change"] = bool(row["speaker_consistency"] < opts.speaker_change_below)
        return row, embedding

    # numpy, soxr, scipy and libsndfile release the GIL: two threads keep two cores busy.
    with ThreadPoolExecutor(CLIP_THREADS) as pool:
        return list(pool.map(one, range(len(cuts)))), dropped


def segment_job(args: tuple) -> tuple[SourceResult | None, str | None]:
    """:func:`segment_source` for a worker process: (result, None), or (None, why) for unreadable audio."""
    try:
        return segment_source(*args), None
    except AudioError as e:
        return None, f"{args[0]}: {e}"


# ---------------------------------------------------------- target speaker


def dominant_speaker(embeddings: np.ndarray, durations: np.ndarray, max_distance: float = 0.3) -> np.ndarray:
    """The centroid of the speaker who talks longest, by clustering clip embeddings.

    Average-linkage clustering on cosine distance, cut at ``max_distance``
    (resemblyzer puts one speaker's clips within about 0.2 of each other and
    different speakers 0.4 and more apart); the cluster with the most speech
    wins, and its mean embedding is the speaker.
    """
    if len(embeddings) == 1:
        return embeddings[0] / np.linalg.norm(embeddings[0])
    labels = fcluster(linkage(embeddings, method="average", metric="cosine"), t=max_distance, criterion="distance")
    totals = {lab: float(durations[labels == lab].sum()) for lab in np.unique(labels)}
    best = max(sorted(totals), key=lambda lab: totals[lab])
    return scoring.mean_embedding(list(embeddings[labels == best]))


def score_speakers(results: list[SourceResult], reference: np.ndarray | None) -> None:
    """Fill ``speaker_similarity`` and ``speaker_reference`` of every clip row, in place."""
    for res in results:
        if res.embeddings is None:
            continue
        if reference is not None:
            target, how = reference, "reference"
        else:
            target = dominant_speaker(res.embeddings, np.array([r["duration_s"] for r in res.rows]))
            how = "cluster"
        for row, emb in zip(res.rows, res.embeddings):
            row["speaker_similarity"] = round(scoring.cosine(emb, target), 4)
            row["speaker_reference"] = how


def reference_embedding(paths: list[Path], max_s: float = 600.0) -> np.ndarray:
    """The target speaker from one or more reference recordings (the first ``max_s`` of each)."""
    encoder = speaker_encoder()
    embeddings = []
    for path in paths:
        audio = decode(path, VAD_RATE, max_s=max_s + 1.0)[: int(max_s * VAD_RATE)]
        embeddings.append(encoder.embed(audio, VAD_RATE))
    return scoring.mean_embedding(embeddings)


# ------------------------------------------------------------------ the stage's work


class SegmentError(VoicemillError):
    """Nothing to cut, or nothing was cut: the stage fails with this message."""


def _copy_side_files(src, raw_dir: Path, out_dir: Path) -> None:
    if getattr(src, "truth_path", ""):
        (out_dir / truth.TRUTH_DIR).mkdir(exist_ok=True)
        shutil.copy2(raw_dir / src.truth_path, out_dir / truth.TRUTH_DIR / f"{src.source_id}.json")
    for name in json.loads(getattr(src, "subtitles", "") or "[]"):
        (out_dir / "subtitles").mkdir(exist_ok=True)
        shutil.copy2(raw_dir / name, out_dir / "subtitles" / name)


def segment(raw_dir: Path, out_dir: Path, rate: int, opts: params.SegmentParams,
            dataset: params.BuildDatasetParams | None = None, ex: executor.Executor | None = None,
            segment_cpus: float = 1.0) -> dict:
    """Cut every voice source of download's output (``raw_dir``) into clips in ``out_dir`` (atomically), on
    the executor, one source per job; score speakers against the reference sources; returns the metrics (see
    ``stages/segment.py``). ``dataset``: the build_dataset params whose thresholds the metrics count against
    (clipped and piled-up clips, and which clips the ground-truth check counts as kept); their defaults when
    None."""
    dataset = dataset or params.BuildDatasetParams()
    sources = manifest.read(raw_dir / "manifest.parquet", "sources")
    role = sources["role"] if "role" in sources else pd.Series("voice", index=sources.index)
    voices, references = sources[role != "reference"], sources[role == "reference"]
    if voices.empty:
        raise SegmentError(f"{raw_dir}: every source has role 'reference'; add sources to cut into clips")
    policy = params.fill(CutPolicy, opts)
    clip_opts = params.fill(ClipOptions, opts)
    ex = ex or executor.Local(opts.workers)
    with atomic_dir(out_dir) as tmp:
        (tmp / "wavs").mkdir()
        jobs = [(src.source_id, raw_dir / src.audio_path, tmp, rate, policy, clip_opts,
                 str(getattr(src, "text", "") or "")) for src in voices.itertuples()]
        results, failed = [], []
        outcomes = ex.map(segment_job, jobs, desc="segment", unit="source", cpus=segment_cpus)
        for job, (value, error) in zip(jobs, outcomes):
            res, err = value if error is None else (None, f"{job[0]}: {error}")
            (results.append(res) if res else failed.append(err))
        for err in failed:
            _LOGGER.warning("skipped %s", err)

        reference = None
        if clip_opts.speaker and not references.empty:
            reference = reference_embedding([raw_dir / p for p in references["audio_path"]])
        if clip_opts.speaker:
            score_speakers(results, reference)

        rows = [row for res in results for row in res.rows]
        if not rows:
            raise SegmentError(f"no clip was cut from the {len(voices)} source(s) in {raw_dir} "
                                 f"({len(failed)} unreadable); check the audio, or lower segment.vad_aggressiveness")
        clips = pd.DataFrame(rows)
        manifest.write(clips, tmp / "manifest.parquet", "clips")
        by_id = {r.source_id: r for r in results}
        summary_sources = []
        for src in sources.itertuples():
            _copy_side_files(src, raw_dir, tmp)
            res = by_id.get(src.source_id)
            summary_sources.append({
                "source_id": src.source_id, "role": str(getattr(src, "role", "voice") or "voice"),
                "start_s": None if pd.isna(getattr(src, "start_s", float("nan"))) else float(src.start_s),
                "duration_s": round(res.duration_s, 3) if res else None,
                "speech_share": round(res.speech_s / res.duration_s, 4) if res and res.duration_s else None,
                "clips": len(res.rows) if res else 0, "dropped_short": res.dropped if res else 0,
            })
        write_json(tmp / "sources.json", summary_sources)
        truths = truth.load_truths(tmp)

    summary = {
        "sources": len(results),
        "reference_sources": len(references),
        "failed": failed,
        "clips": len(rows),
        "hours": round(float(clips["duration_s"].sum()) / 3600, 4),
        "dropped_short": sum(r.dropped for r in results),
        "speaker_change_clips": int(clips["speaker_change"].sum()),
        "clipped_clips": int((clips["clipped_share"] > dataset.max_clipped_share).sum()),
        "pileup_clips": int((clips["peak_pileup"] > dataset.max_peak_pileup).sum()),
        "dnsmos_ovrl_mean": round(float(clips["dnsmos_ovrl"].mean()), 4) if clips["dnsmos_ovrl"].notna().any()
        else None,
    }
    if truths:
        summary["truth"] = truth.compare(clips, truths, policy.max_duration_s, dataset.min_speaker_similarity)
    return summary
