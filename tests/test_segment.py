import numpy as np
import pytest

from voicemill.audio import decode
from voicemill.segment import CutPolicy, Region, merge_short, segment_audio, speech_regions

RATE = 22050


def test_policy_rejects_bad_frame():
    with pytest.raises(ValueError, match="frame_ms"):
        CutPolicy(frame_ms=25)


def test_regions_join_across_short_pauses():
    # 30 ms frames: speech, 2-frame gap (60 ms), speech, 20-frame gap (600 ms), speech
    flags = np.array([1] * 10 + [0] * 2 + [1] * 10 + [0] * 20 + [1] * 10, dtype=bool)
    regions = speech_regions(flags, CutPolicy(min_pause_ms=300))
    assert [(r.start, r.end) for r in regions] == [(0, 22), (42, 52)]


def test_short_region_merges_with_close_neighbour_or_is_dropped():
    policy = CutPolicy(min_duration_s=1.0, max_duration_s=12.0, min_pause_ms=300)
    # 2 s region, 0.3 s gap, 0.3 s region (merged); then 5 s gap and a lone 0.3 s region (dropped)
    regions = [Region(0, 67), Region(77, 87), Region(254, 264)]
    merged, dropped = merge_short(regions, policy)
    assert [(r.start, r.end) for r in merged] == [(0, 87)]
    assert dropped == 1


def test_cuts_keep_sentences_whole_and_split_long_ones(short_episode):
    wav, truth = short_episode
    samples = decode(wav, RATE)
    policy = CutPolicy(max_duration_s=12.0)
    clips, _ = segment_audio(samples, RATE, policy, target_lufs=-23.0)
    spans = [(start, end) for start, end, _, _ in clips]
    for start, end, clip, _ in clips:
        assert end - start <= policy.max_duration_s + 2 * policy.padding_ms / 1000 + 0.05
        assert clip.dtype == np.float32 and np.max(np.abs(clip)) <= 1.0
    short = [s for s in truth["sentences"] if s["end_s"] - s["start_s"] <= policy.max_duration_s]
    whole = [s for s in short if any(a <= s["start_s"] and s["end_s"] <= b for a, b in spans)]
    assert len(whole) == len(short), (spans, short)
    long = [s for s in truth["sentences"] if s["end_s"] - s["start_s"] > policy.max_duration_s]
    assert long, "the fixture must hold a sentence longer than max_duration_s"
    for s in long:
        inside = [(a, b) for a, b in spans if a < s["end_s"] and b > s["start_s"]]
        assert len(inside) >= 2  # split at an internal pause


def test_loudness_is_normalised(short_episode):
    import pyloudnorm

    wav, _ = short_episode
    samples = decode(wav, RATE) * 0.05  # a quiet recording
    clips, _ = segment_audio(samples, RATE, CutPolicy(), target_lufs=-23.0)
    meter = pyloudnorm.Meter(RATE)
    for _, _, clip, measures in clips:
        assert measures["loudness_lufs"] < -35
        assert abs(meter.integrated_loudness(clip.astype(np.float64)) - (-23.0)) < 1.5


def test_silence_gives_no_clip():
    clips, _ = segment_audio(np.zeros(RATE * 5, dtype=np.float32), RATE, CutPolicy(), -23.0)
    assert clips == []


def test_demo_synthesis_is_reproducible(piper_voice):
    from voicemill.demo import synthesize

    a, _ = synthesize(piper_voice, "A ticket costs $89.")
    b, _ = synthesize(piper_voice, "A ticket costs $89.")
    assert a.size > 0 and np.array_equal(a, b)
