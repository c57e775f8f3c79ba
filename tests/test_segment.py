"""Segmentation: the cut policy, streaming, clip measures, speakers, and the check against ground truth."""

import json
import threading

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import butter, sosfilt

from voicemill import demo, truth
from voicemill.audio import AudioError, read_wav, write_wav
from voicemill.segment import (
    TRUE_PEAK_MARGIN,
    BlockReader,
    ClipOptions,
    LoudnessMeter,
    CutPolicy,
    Region,
    bandwidth_hz,
    consistency,
    dominant_speaker,
    merge_short,
    reference_embedding,
    score_speakers,
    segment_source,
    snr_db,
    speech_regions,
    true_peak,
)

# Piper audio (ONNX Runtime) through webrtcvad, DNSMOS and the speaker encoder: results move by CPU.
pytestmark = pytest.mark.machine

RATE = 22050
FAST = ClipOptions(dnsmos=False, speaker=False)


def cut(path, out, policy=CutPolicy(), opts=FAST, source_id="src"):
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    return segment_source(source_id, path, out, RATE, policy, opts)


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


def test_cuts_keep_sentences_whole_split_long_ones_and_never_cut_words(short_episode, tmp_path, measure):
    wav, tr = short_episode
    policy = CutPolicy(max_duration_s=12.0)
    res = cut(wav, tmp_path, policy)
    spans = [(r["start_s"], r["end_s"]) for r in res.rows]
    for r in res.rows:
        clip, rate = read_wav(tmp_path / r["path"])
        assert rate == RATE and abs(len(clip) / rate - r["duration_s"]) < 0.01
        assert r["start_s"] <= r["speech_start_s"] < r["speech_end_s"] <= r["end_s"]
    report = truth.compare(__import__("pandas").DataFrame(res.rows).assign(source_id="src"), {"src": tr},
                           policy.max_duration_s)
    assert report["sentences_whole_share"] == 1.0, report
    assert report["cuts_inside_words"] == 0.0, report
    assert measure("boundary_error_median_ms", report["boundary_error_median_ms"]) <= 80
    long = [s for s in tr["sentences"] if s["end_s"] - s["start_s"] > policy.max_duration_s]
    assert long, "the fixture must hold a sentence longer than max_duration_s"
    for s in long:
        assert len([1 for a, b in spans if a < s["end_s"] and b > s["start_s"]]) >= 2  # split at a pause


def test_streaming_blocks_do_not_change_the_clips(short_episode, tmp_path):
    wav, _ = short_episode
    small = cut(wav, tmp_path / "a", opts=ClipOptions(dnsmos=False, speaker=False, block_s=0.7))
    large = cut(wav, tmp_path / "b", opts=ClipOptions(dnsmos=False, speaker=False, block_s=60))
    assert [r["start_s"] for r in small.rows] == [r["start_s"] for r in large.rows]
    assert [r["loudness_lufs"] for r in small.rows] == [r["loudness_lufs"] for r in large.rows]


def test_block_reader_reads_ahead_in_order_and_stops_cleanly(short_episode, tmp_path):
    wav, _ = short_episode
    samples, rate = read_wav(wav)
    blocks = list(BlockReader(wav, block_s=0.5))
    assert len(blocks) > 3 and all(len(b) == int(0.5 * rate) for b in blocks[:-1])
    assert np.allclose(np.concatenate(blocks), samples, atol=1e-4)  # nothing lost or reordered by the read-ahead
    reader = iter(BlockReader(wav, block_s=0.5))
    next(reader)
    reader.close()  # a caller that stops early: ffmpeg is stopped, no thread is left waiting
    assert not [t for t in threading.enumerate() if t.name == "ffmpeg-reader"]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    with pytest.raises(AudioError):
        list(BlockReader(bad))


def test_stereo_48k_source_is_resampled_and_normalised(short_episode, tmp_path):
    import soxr

    wav, _ = short_episode
    mono, rate = read_wav(wav)
    quiet = soxr.resample(mono * 0.05, rate, 48000)
    import soundfile as sf

    src = tmp_path / "stereo48k.flac"
    sf.write(src, np.stack([quiet, quiet], axis=1), 48000)
    res = cut(src, tmp_path / "out")
    meter = pyloudnorm.Meter(RATE)
    assert res.rows
    for r in res.rows:
        clip, clip_rate = read_wav(tmp_path / "out" / r["path"])
        assert clip_rate == RATE
        assert r["loudness_lufs"] < -35  # measured before normalisation
        assert abs(meter.integrated_loudness(clip.astype(np.float64)) - (-23.0)) < 1.5
        assert true_peak(clip, RATE) <= 10 ** (-1.0 / 20) + 0.01


def test_silence_gives_no_clip(tmp_path):
    write_wav(tmp_path / "silence.wav", np.zeros(RATE * 5, dtype=np.float32), RATE)
    assert cut(tmp_path / "silence.wav", tmp_path / "out").rows == []


def test_measures_see_noise_band_limits_and_clipping(short_episode, tmp_path, measure):
    wav, _ = short_episode
    clean, rate = read_wav(wav)
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0, 10 ** (-30 / 20), len(clean)).astype(np.float32)
    narrow = sosfilt(butter(10, 3800, fs=rate, output="sos"), clean).astype(np.float32)
    clipped = np.clip(clean * 4, -1, 1)
    for name, x in (("clean", clean), ("noisy", noisy), ("narrow", narrow), ("clipped", clipped)):
        write_wav(tmp_path / f"{name}.wav", x, rate)
    rows = {name: cut(tmp_path / f"{name}.wav", tmp_path / name).rows for name in ("clean", "noisy", "narrow",
                                                                                    "clipped")}
    med = {name: {k: float(np.median([r[k] for r in v])) for k in ("snr_db", "bandwidth_hz", "clipped_share",
                                                                      "silence_share")}
           for name, v in rows.items()}
    for name, key in (("clean", "snr_db"), ("noisy", "snr_db"), ("clean", "bandwidth_hz"), ("narrow", "bandwidth_hz")):
        measure(f"{name}_{key}", med[name][key])
    assert med["clean"]["snr_db"] > 40 and med["noisy"]["snr_db"] < 30
    assert med["clean"]["bandwidth_hz"] > 7000 and med["narrow"]["bandwidth_hz"] < 5500
    assert med["clean"]["clipped_share"] == 0 and med["clipped"]["clipped_share"] > 0.001
    assert 0 < med["clean"]["silence_share"] < 0.5


def test_fast_measures_agree_with_the_reference_implementations(short_episode, tmp_path):
    """The clip pass's own loudness meter, windowed true peak and int16 writer give what pyloudnorm,
    whole-clip oversampling and libsndfile give."""
    import soundfile as sf

    wav, _ = short_episode
    samples, rate = read_wav(wav)
    rng = np.random.default_rng(3)
    ceiling = 10 ** (-1.0 / 20)
    for k, (a, b) in enumerate([(0, len(samples)), (rate, int(1.41 * rate)), (2 * rate, 9 * rate)]):
        clip = samples[a:b]
        for signal in (clip, clip * 1e-4, (clip + rng.normal(0, 0.05, clip.size)).astype(np.float32)):
            ours = LoudnessMeter(rate).integrated_loudness(signal)
            theirs = pyloudnorm.Meter(rate).integrated_loudness(signal.astype(np.float64))
            assert ours == theirs == float("-inf") or abs(ours - theirs) < 1e-9
        loud = (clip / np.max(np.abs(clip)) * ceiling).astype(np.float32)
        whole = true_peak(loud, rate)
        assert whole > ceiling  # inter-sample peaks over the sample peak
        assert abs(true_peak(loud, rate, above=ceiling * TRUE_PEAK_MARGIN) - whole) < 1e-6
        over = (clip * 1.7).astype(np.float32)  # clipped by the writer
        write_wav(tmp_path / f"ours{k}.wav", over, rate)
        sf.write(tmp_path / f"ref{k}.wav", np.clip(over, -1, 1), rate, subtype="PCM_16", format="WAV")
        assert (tmp_path / f"ours{k}.wav").read_bytes() == (tmp_path / f"ref{k}.wav").read_bytes()


def test_snr_estimate_on_frame_levels():
    levels = np.array([-60.0] * 20 + [-20.0] * 80)
    assert 35 < snr_db(levels) < 45
    tone = np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)
    assert 900 < bandwidth_hz(tone, RATE) < 1500
    assert np.isnan(bandwidth_hz(np.zeros(100), RATE))  # too short to tell


@pytest.fixture(scope="module")
def call_in(tmp_path_factory, piper_voice):
    """The demo's hard episode (two speakers, noise, music, clipping, long silence) and a reference."""
    out = tmp_path_factory.mktemp("call_in")
    episode = next(e for e in demo.EPISODES if e.name == "ep04_call_in")
    tr = demo.write_episode(piper_voice, episode, out, seed=1234)
    demo.write_reference(piper_voice, out / "reference.wav")
    return out, tr


def test_hard_episode_meets_the_truth_goals_with_a_reference(call_in, tmp_path, measure):
    import pandas as pd

    folder, tr = call_in
    policy = CutPolicy()
    res = cut(folder / "ep04_call_in.wav", tmp_path, policy, ClipOptions(), source_id="ep04")
    score_speakers([res], reference_embedding([folder / "reference.wav"]))
    clips = pd.DataFrame(res.rows)
    assert clips["dnsmos_ovrl"].between(1, 5).all() and (clips["speaker_reference"] == "reference").all()
    report = truth.compare(clips, {"ep04": tr}, policy.max_duration_s, min_similarity=0.75)
    for key in ("sentences_whole_share", "boundary_error_median_ms", "speaker_purity", "target_speech_kept_share"):
        measure(key, report[key])
    # 12 of 13 whole on every variation tried; one more split at a pause is still the goal's "nearly all".
    assert report["sentences_whole_share"] >= 11 / 13, report
    assert report["cuts_inside_words"] == 0.0, report
    assert report["boundary_error_median_ms"] <= 80, report
    assert report["speaker_purity"] >= 0.98, report
    assert report["target_speech_kept_share"] >= 0.75, report  # 0.81 here: one clip less is about 0.05
    # The guest's clips sit far below the host's.
    sims = {s: [] for s in ("joe", "guest")}
    for r in res.rows:
        spk = {x["speaker"] for x in tr["sentences"] if x["start_s"] < r["end_s"] and x["end_s"] > r["start_s"]}
        if len(spk) == 1:
            sims[spk.pop()].append(r["speaker_similarity"])
    assert measure("host_min_similarity", min(sims["joe"])) > measure("guest_max_similarity", max(sims["guest"])) + 0.1, sims
    # The clipped passage is measured as clipped, the noisy one as noisy.
    by_time = lambda t: next(r for r in res.rows if r["start_s"] <= t <= r["end_s"])  # noqa: E731
    noisy = next(s for s in tr["sentences"] if "noise" in s["impairments"])
    hot = next(s for s in tr["sentences"] if "clipped" in s["impairments"])
    assert by_time((noisy["start_s"] + noisy["end_s"]) / 2)["snr_db"] < 30
    assert by_time((hot["start_s"] + hot["end_s"]) / 2)["clipped_share"] > 0.001


def test_two_voices_in_one_clip_are_flagged_and_the_dominant_speaker_found(call_in, piper_voice, tmp_path, measure):
    from voicemill.scoring import SpeakerEncoder

    host = [demo.speak(piper_voice, demo.Line(t))[0] for t in demo.REFERENCE_SENTENCES]
    guest = demo.speak(piper_voice, demo.Line(demo.REFERENCE_SENTENCES[0], demo.GUEST))[0]
    gap = np.zeros(RATE // 5, dtype=np.float32)
    enc = SpeakerEncoder()
    _, one = enc.embed_partials(np.concatenate([host[1], gap, host[2]]), RATE)
    _, two = enc.embed_partials(np.concatenate([host[1], gap, guest]), RATE)
    assert measure("consistency_one_voice", consistency(one)) > 0.8 > 0.75 > measure("consistency_two_voices", consistency(two))

    embeddings = np.array([enc.embed(x, RATE) for x in host + [guest]])
    centroid = dominant_speaker(embeddings, np.array([3.0, 3.0, 3.0, 3.0]))
    sims = embeddings @ centroid
    assert measure("host_min", sims[:3].min()) > measure("guest", sims[3]) + 0.15


def test_without_reference_clusters_pick_the_main_speaker(call_in, tmp_path, measure):
    folder, tr = call_in
    res = cut(folder / "ep04_call_in.wav", tmp_path, CutPolicy(), ClipOptions(dnsmos=False), source_id="ep04")
    score_speakers([res], None)
    assert {r["speaker_reference"] for r in res.rows} == {"cluster"}
    host = [r["speaker_similarity"] for r in res.rows
            if {s["speaker"] for s in tr["sentences"] if s["start_s"] < r["end_s"] and s["end_s"] > r["start_s"]}
            == {"joe"}]
    guest = [r["speaker_similarity"] for r in res.rows
             if {s["speaker"] for s in tr["sentences"] if s["start_s"] < r["end_s"] and s["end_s"] > r["start_s"]}
             == {"guest"}]
    assert measure("host_median", np.median(host)) > measure("guest_median", np.median(guest)) + 0.15


def test_truth_compare_counts_cuts_inside_words_and_impure_clips():
    import pandas as pd

    tr = {"target_speaker": "a", "sentences": [
        {"index": 0, "speaker": "a", "start_s": 1.0, "end_s": 3.0,
         "words": [{"start_s": 1.0, "end_s": 1.8}, {"start_s": 2.2, "end_s": 3.0}]},
        {"index": 1, "speaker": "b", "start_s": 4.0, "end_s": 5.0, "words": [{"start_s": 4.0, "end_s": 5.0}]},
    ]}
    clips = pd.DataFrame([
        {"source_id": "s", "start_s": 0.8, "end_s": 1.5, "speech_start_s": 1.0, "speech_end_s": 1.4,
         "speaker_similarity": 0.9, "speaker_change": False},  # ends inside the first word
        {"source_id": "s", "start_s": 1.5, "end_s": 5.2, "speech_start_s": 2.2, "speech_end_s": 5.0,
         "speaker_similarity": 0.8, "speaker_change": False},  # starts inside the first word; holds a and b
    ])
    r = truth.compare(clips, {"s": tr}, max_duration_s=12.0, min_similarity=0.75)
    assert r["cuts_inside_words_count"] == 2 and r["cuts"] == 4
    assert r["sentences_whole"] == 1  # sentence b only
    assert r["speaker_purity"] == 0.5
    # speech starts 1.0 and 2.2 are true starts (2.2 follows a 0.4 s pause); ends 1.4 (true 1.8) and 5.0
    assert r["boundary_error_median_ms"] == 0.0
    assert r["boundary_error_p95_ms"] == pytest.approx(340.0, abs=1)
    assert r["target_speech_kept_share"] == 1.0  # a's 2 s lie in the two clips
    # the dataset's share: only the second clip survived its filters, holding 1.5 of a's 2 s
    kept = truth.target_speech_kept({"s": tr}, clips.iloc[[1]])
    assert kept == {"target_speech_s": 2.0, "target_speech_kept_s": 1.5, "target_speech_kept_share": 0.75}


def test_demo_synthesis_is_reproducible(piper_voice):
    a, _ = demo.synthesize(piper_voice, "A ticket costs $89.")
    b, _ = demo.synthesize(piper_voice, "A ticket costs $89.")
    assert a.size > 0 and np.array_equal(a, b)


def test_demo_truth_has_speakers_words_and_impairments(call_in):
    _, tr = call_in
    speakers = {s["speaker"] for s in tr["sentences"]}
    assert speakers == {"joe", "guest"} and tr["target_speaker"] == "joe"
    assert {e["kind"] for e in tr["events"]} == {"noise", "music", "clipped", "long_silence"}
    for s in tr["sentences"]:
        assert s["words"] and s["start_s"] <= s["words"][0]["start_s"] < s["words"][-1]["end_s"] <= s["end_s"] + 1e-3
    json.dumps(tr)


def test_parallel_workers_give_the_serial_result(short_episode, call_in, tmp_path):
    import shutil

    import pandas as pd

    from voicemill.segment import segment
    from voicemill import params

    wav, _ = short_episode
    folder, _ = call_in
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(wav, raw / "a.wav")
    shutil.copy(folder / "ep04_call_in.wav", raw / "b.wav")
    shutil.copy(folder / "reference.wav", raw / "r.wav")
    pd.DataFrame([
        {"source_id": sid, "kind": "file", "origin": sid, "title": "", "channel": "", "upload_date": "", "license": "",
         "audio_path": f"{sid}.wav", "duration_s": 1.0, "sha256": "", "downloaded_at": "", "role": role}
        for sid, role in (("a", "voice"), ("b", "voice"), ("r", "reference"))
    ]).to_parquet(raw / "manifest.parquet")
    out = {}
    for workers in (1, 2):
        opts = params.SegmentParams(workers=workers)
        dataset = params.BuildDatasetParams(min_speaker_similarity=0.75)
        summary = segment(raw, tmp_path / f"clips{workers}", RATE, opts, dataset)
        assert summary["sources"] == 2 and summary["reference_sources"] == 1
        out[workers] = pd.read_parquet(tmp_path / f"clips{workers}" / "manifest.parquet")
    pd.testing.assert_frame_equal(out[1], out[2])
    assert (out[1]["speaker_reference"] == "reference").all()
    for path in out[1]["path"]:
        assert (tmp_path / "clips1" / path).read_bytes() == (tmp_path / "clips2" / path).read_bytes()


def test_clip_labels_score_each_clip_against_the_words_inside_it():
    import pandas as pd

    def words(text, start):
        return [{"text": w, "start_s": start + k, "end_s": start + k + 0.6} for k, w in enumerate(text.split())]

    tr = {"target_speaker": "a", "sentences": [
        {"index": 0, "speaker": "a", "text": "Add the water.", "start_s": 0.0, "end_s": 2.6,
         "words": words("Add the water", 0.0)},
        {"index": 1, "speaker": "a", "text": "Then wait, please.", "start_s": 4.0, "end_s": 6.6,
         "words": words("Then wait please", 4.0)},
    ]}
    clips = pd.DataFrame([
        {"clip_id": "x0", "source_id": "s", "start_s": -0.1, "end_s": 3.0, "text": "Add the"},  # lost "water"
        {"clip_id": "x1", "source_id": "s", "start_s": 3.5, "end_s": 5.8, "text": "water then wait"},  # took it
        {"clip_id": "x2", "source_id": "s", "start_s": 5.8, "end_s": 7.0, "text": "Please!"},
    ])
    assert truth.clip_reference(tr, -0.1, 3.0) == "Add the water."
    assert truth.clip_reference(tr, 3.5, 5.8) == "Then wait"
    r = truth.clip_labels({"s": tr}, clips, "en")
    assert r["clip_label_clips"] == 3 and r["clip_label_exact_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert r["clip_edge_word_errors"] == 2 and r["clip_edge_error_ids"] == ["x0", "x1"]
    assert r["clip_label_wer"] == pytest.approx(2 / 6, abs=1e-3)
    # A word with no known text inside a partly covered sentence: the clip cannot be scored.
    del tr["sentences"][1]["words"][0]["text"]
    assert truth.clip_reference(tr, 3.5, 5.8) is None


def test_edge_errors_are_words_missing_or_added_at_the_ends_only():
    from voicemill.scoring import edge_errors

    assert edge_errors("three hundred grams of water", "three hundred grams of") == (False, True)
    assert edge_errors("water and then", "and then") == (True, False)
    assert edge_errors("a ticket costs", "i take it cost") == (False, False)  # misheard, nothing moved
    assert edge_errors("the dough rests", "the dough rests") == (False, False)


def test_demo_word_texts_follow_espeaks_words(piper_voice):
    _, _, spoken = demo.synthesize_words(piper_voice, "I am happy to be here, and it costs $4.75 today.")
    texts = demo.word_texts(piper_voice, "I am happy to be here, and it costs $4.75 today.", [w[0] for w in spoken])
    assert len(texts) == len(spoken)
    # espeak runs "I am" and "to be" together and reads "$4.75" as several words
    assert "I am" in texts and "to be" in texts and "$4.75" in texts and texts[-1] == "today"
    assert " ".join(t for t in texts if t) == "I am happy to be here and it costs $4.75 today"


def _speakers_in(rows, tr):
    return ["".join(sorted({s["speaker"][0] for s in tr["sentences"]
                            if s["start_s"] < r["end_s"] and s["end_s"] > r["start_s"]})) for r in rows]


def test_quick_turns_are_split_where_the_voice_changes(piper_voice, tmp_path):
    import pandas as pd

    lines = (demo.Line("So tell me, where does a beginner start?"),
             demo.Line("Start with flour, salt, yeast, and three hundred grams of water.", demo.GUEST, (), 0.15),
             demo.Line("That sounds simple enough, even for me.", demo.HOST, (), 0.2))
    episode = demo.Episode("turns", "Turns", lines)
    tr = demo.write_episode(piper_voice, episode, tmp_path, seed=1)
    opts = ClipOptions(dnsmos=False)
    joined = cut(tmp_path / "turns.wav", tmp_path / "a", CutPolicy(turn_pause_ms=0), opts)
    split = cut(tmp_path / "turns.wav", tmp_path / "b", CutPolicy(), opts)
    # Pauses of 0.15-0.2 s are far under min_pause_ms: one region, three sentences, two voices.
    assert _speakers_in(joined.rows, tr) == ["gj"]
    assert _speakers_in(split.rows, tr) == ["j", "g", "j"]
    report = truth.compare(pd.DataFrame(split.rows).assign(speaker_similarity=1.0), {"src": tr}, 12.0, 0.5)
    assert report["sentences_whole_share"] == 1.0 and report["cuts_inside_words"] == 0.0


def test_a_music_intro_does_not_open_the_first_clip(piper_voice, tmp_path):
    lines = (demo.Line("Welcome to the kitchen table, the show about food.", demo.HOST, ("music",)),)
    tr = demo.write_episode(piper_voice, demo.Episode("intro", "Intro", lines, lead_in_s=3.0), tmp_path, seed=1)
    rows = cut(tmp_path / "intro.wav", tmp_path / "c").rows
    first = tr["sentences"][0]
    assert len(rows) == 1 and first["start_s"] - 0.5 < rows[0]["start_s"] <= first["start_s"], rows[0]
