"""build_dataset: every filter drops the clip it should and keeps clean ones; the outputs load.

The corpus is made here: ten short WAVs (tones, one pitch per clip) with
clean measures, and transcripts whose speaking rate varies a little around
14 characters per second, as one speaker's does. Each filter test spoils one
clip in one way and runs the real build.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from stages import build_dataset as stage
from voicemill import dataset
from voicemill.audio import write_wav
from voicemill.dataset import REASONS, DatasetOptions, build_dataset
from voicemill.textnorm import normalize, spoken_chars

RATE = 16000
PAD_S = 0.15
SENTENCES = [
    "The river was high after three days of rain.",
    "She paid $4.50 for the map at the station.",
    "Nobody expected the meeting to end before noon.",
    "In 1987 the bridge was painted a bright green.",
    "Quiet voices carried far across the frozen lake.",
    "He joked that the jazz band was exquisitely loud.",
    "Twelve boxes of books arrived on Monday morning.",
    "The forecast promised sun, but the wind disagreed.",
    "Dr. Patel checked the results twice before lunch.",
    "Every window in the old mill faced the valley.",
]


def _clip_rows(n: int, source: str = "src-a") -> tuple[pd.DataFrame, pd.DataFrame]:
    clips, transcripts = [], []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)] + ("" if i < len(SENTENCES) else f" Take {i}.")
        speech_s = spoken_chars(normalize(text)) / (12.0 + i % 5)  # 12-16 characters per second
        duration = round(speech_s + 2 * PAD_S, 3)
        clip_id = f"{source}_{i:04d}"
        clips.append({
            "clip_id": clip_id, "source_id": source, "path": f"wavs/{clip_id}.wav", "start_s": 10.0 * i,
            "end_s": 10.0 * i + duration, "duration_s": duration, "sample_rate": RATE, "loudness_lufs": -23.0,
            "peak": 0.5, "clipped_share": 0.0, "peak_pileup": 0.6, "source_text": "", "speech_start_s": PAD_S,
            "speech_end_s": duration - PAD_S, "silence_share": 0.1, "snr_db": 35.0, "bandwidth_hz": 8000.0,
            "dnsmos_sig": 3.5, "dnsmos_bak": 4.0, "dnsmos_ovrl": 3.3, "speaker_similarity": 0.9, "speaker_consistency": 0.95,
            "speaker_change": False, "speaker_reference": "cluster",
        })
        transcripts.append({
            "clip_id": clip_id, "text": text, "language": "en", "language_probability": 0.99,
            "confidence": 0.8, "avg_logprob": math.log(0.8), "no_speech_prob": 0.01, "compression_ratio": 1.2,
            "words": "[]", "model": "tiny.en", "chosen_model": "tiny.en", "text_source": "asr", "language_mismatch": False,
            "hallucination": "", "label_agrees": True,
        })
    return pd.DataFrame(clips), pd.DataFrame(transcripts)


def _write_audio(clips: pd.DataFrame, clips_dir) -> None:
    for k, r in enumerate(clips.itertuples()):
        t = np.arange(int(r.duration_s * RATE)) / RATE
        write_wav(clips_dir / r.path, 0.1 * np.sin(2 * np.pi * (180 + 15 * k) * t), RATE)


@pytest.fixture()
def corpus(tmp_path):
    """Ten clean clips of one source: (clips, transcripts, clips_dir)."""
    clips, transcripts = _clip_rows(10)
    _write_audio(clips, tmp_path / "clips")
    return clips, transcripts, tmp_path / "clips"


def _build(tmp_path, clips, transcripts, clips_dir, name="ds", sources=None, **opts):
    opts = DatasetOptions(**{"min_val_clips": 2, **opts})
    return build_dataset(clips, clips_dir, transcripts, tmp_path / name, opts, sources)


def _spoil(clips, transcripts, clip_id, clip_values=None, text_values=None):
    clips, transcripts = clips.copy(), transcripts.copy()
    for col, value in (clip_values or {}).items():
        clips.loc[clips["clip_id"] == clip_id, col] = value
    for col, value in (text_values or {}).items():
        transcripts.loc[transcripts["clip_id"] == clip_id, col] = value
    return clips, transcripts


TARGET = "src-a_0003"

CASES = {
    "too_short": ({"duration_s": 0.3}, None),
    "too_long": ({"duration_s": 20.0}, None),
    "too_few_words": (None, {"text": "  "}),
    "too_many_words": (None, {"text": " ".join(["word"] * 85)}),
    "clipped": ({"clipped_share": 0.02}, None),
    "peak_pileup": ({"peak_pileup": 4.0}, None),
    "low_dnsmos": ({"dnsmos_ovrl": 1.8}, None),
    "speaker_change": ({"speaker_change": True}, None),
    "other_speaker": ({"speaker_similarity": 0.5}, None),
    "language_mismatch": (None, {"language_mismatch": True}),
    "unverified_label": (None, {"label_agrees": False}),
    # the two ASR models disagreed and scoring both transcripts did not settle it
    "unverified_label_balanced": (None, {"label_agrees": False, "arbitration": "balanced"}),
    "hallucination": (None, {"hallucination": "repetition"}),
    "low_confidence": (None, {"confidence": 0.2}),
    # Speech over a third of the span: three times the source's rate (a
    # transcript with words the audio does not have looks like this).
    "rate_outlier": ({"speech_end_s": PAD_S + 0.6}, None),
}


@pytest.mark.parametrize("reason", list(CASES))
def test_each_filter_drops_its_clip_and_keeps_the_clean_ones(tmp_path, corpus, reason):
    clips, transcripts, clips_dir = corpus
    clip_values, text_values = CASES[reason]
    clips, transcripts = _spoil(clips, transcripts, TARGET, clip_values, text_values)
    result = _build(tmp_path, clips, transcripts, clips_dir)
    verdict = result.clips.set_index("clip_id")
    reason = reason.removesuffix("_balanced")
    assert verdict.loc[TARGET, "drop_reason"] == reason
    assert not verdict.loc[TARGET, "kept"]
    assert verdict.drop(index=TARGET)["kept"].all()
    assert result.summary["dropped"] == {r: int(r == reason) for r in REASONS}
    assert result.summary["clips"] == 9
    assert TARGET not in (tmp_path / "ds" / "metadata.csv").read_text()


@pytest.mark.parametrize("winner", ["model", "verify_model"])
def test_a_disagreement_the_arbitration_settled_is_kept(tmp_path, corpus, winner):
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, None, {"label_agrees": False, "arbitration": winner,
                                                                   "arbitration_margin": 6.5})
    result = _build(tmp_path, clips, transcripts, clips_dir)
    assert result.clips.set_index("clip_id")["kept"].all()


def test_minutes_per_speaker_add_up_and_reach_the_card(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"dnsmos_ovrl": 1.5}, None)
    result = _build(tmp_path, clips, transcripts, clips_dir)
    [(speaker, m)] = result.summary["minutes"].items()
    target_min = float(clips.loc[clips["clip_id"] == TARGET, "duration_s"].iloc[0]) / 60
    assert speaker == "" and m["lost_min"] == {"low_dnsmos": pytest.approx(target_min, abs=0.01)}
    assert m["segmented_min"] == pytest.approx(m["kept_min"] + target_min, abs=0.02)
    assert m["segmented_min"] == pytest.approx(clips["duration_s"].sum() / 60, abs=0.01)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "## Minutes per speaker" in card and "low_dnsmos" in card


def _one_sentence_in_two_clips(clips, transcripts):
    """Clips 3 and 4 say one sentence that segment cut at a comma pause; both labels read as sentences (as
    Whisper writes clips decoded apart), and transcribe heard the sentence go on across the pause."""
    a, b = "src-a_0003", "src-a_0004"
    end_a = float(clips.loc[clips["clip_id"] == a, "end_s"].iloc[0])
    length_b = float(clips.loc[clips["clip_id"] == b, "duration_s"].iloc[0])
    clips, transcripts = _spoil(clips, transcripts, b, {"start_s": end_a + 0.8, "end_s": end_a + 0.8 + length_b},
                                {"text": "Please bring them along to the market.", "sentence_goes_on": "no"})
    clips, transcripts = _spoil(clips, transcripts, a, None, {"text": "If you grow more beans than you can eat.",
                                                              "sentence_goes_on": "yes"})
    transcripts["sentence_goes_on"] = transcripts["sentence_goes_on"].fillna("")
    return clips, transcripts, a, b


def test_clips_heard_as_one_sentence_are_joined_whatever_their_labels_say(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips, transcripts, a, b = _one_sentence_in_two_clips(clips, transcripts)
    # 0.8 s apart: beyond join_max_pause_s 0.5, which only the label rule reads
    result = _build(tmp_path, clips, transcripts, clips_dir, rate_iqr_k=0.0, join_max_pause_s=0.5)
    assert result.summary["joined"] == 1
    rows = {line.split("|")[0]: line.split("|") for line in (tmp_path / "ds" / "metadata.csv").read_text().splitlines()}
    assert rows[f"{a}_0004"][1] == "If you grow more beans than you can eat, Please bring them along to the market."


@pytest.mark.parametrize("gone", ["src-a_0003", "src-a_0004"])
def test_the_rest_of_a_sentence_whose_other_part_was_dropped_is_dropped(tmp_path, corpus, gone):
    clips, transcripts, clips_dir = corpus
    clips, transcripts, a, b = _one_sentence_in_two_clips(clips, transcripts)
    clips, transcripts = _spoil(clips, transcripts, gone, {"dnsmos_ovrl": 1.5}, None)
    result = _build(tmp_path, clips, transcripts, clips_dir, rate_iqr_k=0.0)
    verdict = result.clips.set_index("clip_id")
    other = b if gone == a else a
    assert verdict.loc[gone, "drop_reason"] == "low_dnsmos"
    assert verdict.loc[other, "drop_reason"] == "partial_sentence" and not verdict.loc[other, "kept"]
    assert result.summary["dropped"]["partial_sentence"] == 1 and result.summary["joined"] == 0
    # A sentence too long to be one clip keeps its parts.
    kept = _build(tmp_path, clips, transcripts, clips_dir, name="ds2", rate_iqr_k=0.0, max_duration_s=6.0)
    assert kept.clips.set_index("clip_id").loc[other, "kept"] or kept.clips.set_index("clip_id").loc[
        other, "drop_reason"] == "too_long"


def test_no_transcript_and_duplicate_text(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    transcripts = transcripts[transcripts["clip_id"] != "src-a_0005"]
    # Same sentence as clip 0, other case and punctuation, same pace: a duplicate.
    clips, transcripts = _spoil(clips, transcripts, "src-a_0007",
                                {c: clips.loc[0, c] for c in ("duration_s", "speech_end_s")},
                                {"text": SENTENCES[0].upper().replace(".", "!")})
    result = _build(tmp_path, clips, transcripts, clips_dir)
    verdict = result.clips.set_index("clip_id")
    assert verdict.loc["src-a_0005", "drop_reason"] == "no_transcript"
    assert verdict.loc["src-a_0007", "drop_reason"] == "duplicate_text"
    assert verdict.loc["src-a_0000", "kept"]  # the first by id stays
    assert result.summary["dropped"]["no_transcript"] == 1 and result.summary["dropped"]["duplicate_text"] == 1
    assert result.summary["clips"] == 8


def test_every_failed_filter_is_recorded(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"dnsmos_ovrl": 1.5, "speaker_similarity": 0.3},
                                {"confidence": 0.1})
    result = _build(tmp_path, clips, transcripts, clips_dir)
    row = result.clips.set_index("clip_id").loc[TARGET]
    assert row["drop_reason"] == "low_dnsmos"
    assert row["drop_reasons"] == "low_dnsmos,other_speaker,low_confidence"
    assert result.summary["dropped"]["low_dnsmos"] == 1 and result.summary["dropped"]["other_speaker"] == 0
    all_clips = pd.read_parquet(tmp_path / "ds" / "clips_all.parquet")
    assert len(all_clips) == 10 and all_clips["kept"].sum() == 9
    kept = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert len(kept) == 9 and TARGET not in set(kept["clip_id"]) and "kept" not in kept.columns


def test_params_switch_filters_off(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"speaker_change": True}, {"hallucination": "loop"})
    result = _build(tmp_path, clips, transcripts, clips_dir, drop_speaker_change=False, drop_hallucinations=False)
    assert result.clips["kept"].all()
    assert result.statuses["speaker_change"] == "off (drop_speaker_change = false)"


def test_confidence_applies_to_asr_transcripts_only(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, None, {"confidence": 0.1, "text_source": "subtitles"})
    assert _build(tmp_path, clips, transcripts, clips_dir).clips["kept"].all()


def test_missing_columns_make_filters_inactive_and_say_so(tmp_path, corpus, caplog):
    """A manifest from before the quality columns: those filters are inactive, in the log and the card."""
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"dnsmos_ovrl": 1.0}, None)
    old_clips = clips.drop(columns=["dnsmos_ovrl", "speaker_similarity", "speaker_change", "speech_start_s",
                                    "speech_end_s"])
    old_transcripts = transcripts.drop(columns=["language_mismatch", "hallucination", "text_source"])
    with caplog.at_level("WARNING", logger="voicemill.dataset"):
        result = _build(tmp_path, old_clips, old_transcripts, clips_dir)
    assert result.clips["kept"].all()
    for reason, column in (("low_dnsmos", "dnsmos_ovrl"), ("other_speaker", "speaker_similarity"),
                           ("speaker_change", "speaker_change"), ("language_mismatch", "language_mismatch"),
                           ("hallucination", "hallucination")):
        assert result.statuses[reason].startswith("inactive") and column in result.statuses[reason]
        assert f"filter {reason} is inactive" in caplog.text
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "inactive: the clips manifest has no dnsmos_ovrl column (written by an older segment" in card


def test_unmeasured_scores_pass(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips["dnsmos_ovrl"] = float("nan")  # scoring was off
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"speaker_similarity": float("nan")}, None)
    result = _build(tmp_path, clips, transcripts, clips_dir)
    assert result.clips["kept"].all()
    assert result.statuses["low_dnsmos"] == "inactive: dnsmos_ovrl was not measured (all NaN)"
    assert result.statuses["other_speaker"] == "active; 1 clip(s) not measured, kept"


def test_rate_fence_needs_enough_clips(tmp_path):
    clips, transcripts = _clip_rows(6)
    _write_audio(clips, tmp_path / "clips")
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"speech_end_s": PAD_S + 0.6}, None)
    result = _build(tmp_path, clips, transcripts, tmp_path / "clips")
    assert result.clips["kept"].all()
    assert result.statuses["rate_outlier"].startswith("inactive: no source has 8 clips")
    fences = dataset.rate_fences(result.clips["chars_per_s"], result.clips["source_id"],
                                 pd.Series(True, index=result.clips.index), 3.0, 6)
    assert fences["src-a"][1] < result.clips.set_index("clip_id").loc[TARGET, "chars_per_s"]


def test_nothing_left_names_the_param(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    clips["dnsmos_ovrl"] = 2.0
    with pytest.raises(dataset.DatasetError, match=r"low_dnsmos \(build_dataset.min_dnsmos_ovrl = 2.5"):
        _build(tmp_path, clips, transcripts, clips_dir)


def test_ljspeech_metadata_loads_in_coqui(tmp_path, corpus):
    from TTS.tts.datasets.formatters import ljspeech

    clips, transcripts, clips_dir = corpus
    _build(tmp_path, clips, transcripts, clips_dir)
    ds = tmp_path / "ds"
    items = ljspeech(str(ds), "metadata.csv")
    assert len(items) == 10
    texts = {normalize(t) for t in SENTENCES}
    assert {it["text"].strip() for it in items} == texts
    assert "She paid four dollars and fifty cents for the map at the station." in texts
    for split in ("train", "val"):
        for it in ljspeech(str(ds), f"metadata_{split}.csv"):
            assert (ds / "wavs").joinpath(it["audio_file"].rsplit("/", 1)[-1]).exists()


def test_hf_parquet_loads_with_datasets(tmp_path, corpus):
    import datasets

    clips, transcripts, clips_dir = corpus
    _build(tmp_path, clips, transcripts, clips_dir)
    ds_dir = tmp_path / "ds"
    loaded = datasets.load_dataset("parquet", data_files=str(ds_dir / "dataset.parquet"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(loaded.features["audio"], datasets.Audio)
    assert loaded.features["audio"].sampling_rate == RATE
    metadata = {line.split("|")[0]: line.split("|")[2] for line in
                (ds_dir / "metadata.csv").read_text().splitlines()}
    raw = loaded.cast_column("audio", datasets.Audio(decode=False))
    assert len(raw) == len(metadata) == 10
    for row in raw:
        clip_id = row["audio"]["path"].removesuffix(".wav")
        assert row["audio"]["bytes"] == (ds_dir / "wavs" / f"{clip_id}.wav").read_bytes()
        assert row["text"] == metadata[clip_id]
    decoded = loaded[0]["audio"].get_all_samples()  # decodes through torchcodec like any HF audio set
    assert decoded.sample_rate == RATE and decoded.data.shape[-1] > RATE // 2


def _card_table(card: str, header: str) -> list[list[str]]:
    section = card.split(f"## {header}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in section.splitlines()
            if line.startswith("| ")]
    return rows[1:]  # after the header row


def test_card_numbers_match_the_metadata(tmp_path, corpus):
    import soundfile as sf

    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"dnsmos_ovrl": 1.8}, None)
    clips, transcripts = _spoil(clips, transcripts, "src-a_0008", None, {"confidence": 0.1})
    result = _build(tmp_path, clips, transcripts, clips_dir)
    ds = tmp_path / "ds"
    card = (ds / "README.md").read_text()
    summary = dict(_card_table(card, "Summary"))
    lines = (ds / "metadata.csv").read_text().splitlines()
    seconds = sum(sf.info(str(ds / "wavs" / f"{line.split('|')[0]}.wav")).duration for line in lines)
    assert int(summary["clips kept"]) == len(lines) == 8
    assert int(summary["train clips"]) == len((ds / "metadata_train.csv").read_text().splitlines())
    assert int(summary["val clips"]) == len((ds / "metadata_val.csv").read_text().splitlines())
    assert float(summary["hours kept"]) == pytest.approx(seconds / 3600, abs=6e-5)
    assert float(summary["minutes kept"]) == pytest.approx(seconds / 60, abs=0.006)
    assert int(summary["clips in"]) == 10 and int(summary["clips dropped"]) == 2
    assert summary["fingerprint"] == f"`{result.summary['fingerprint']}`"
    verdicts = pd.read_parquet(ds / "clips_all.parquet")
    counts = verdicts.loc[~verdicts["kept"], "drop_reason"].value_counts()
    drops = {row[1].strip("`"): (int(row[4]), row[3]) for row in _card_table(card, "What was dropped, and why")}
    assert list(drops) == list(REASONS)
    assert {r: n for r, (n, _) in drops.items()} == {r: int(counts.get(r, 0)) for r in REASONS}
    assert drops["low_dnsmos"][1] == "`build_dataset.min_dnsmos_ovrl` = 2.5"
    assert "not enough for a usable voice" in card
    assert "![Clip durations, kept and dropped](duration_hist.png)" in card
    for png in ("duration_hist.png", "rate_hist.png"):
        assert (ds / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    coverage = dict(_card_table(card, "Character coverage"))
    text = "".join(line.split("|")[2] for line in lines).lower()
    assert int(coverage["`e`"]) == text.count("e") and int(coverage["space"]) == text.count(" ")
    assert re.search(r"letters never seen: none", card)


def test_fingerprint_is_stable_and_follows_the_text(tmp_path, corpus):
    clips, transcripts, clips_dir = corpus
    first = _build(tmp_path, clips, transcripts, clips_dir, name="a").summary["fingerprint"]
    again = _build(tmp_path, clips, transcripts, clips_dir, name="b").summary["fingerprint"]
    assert first == again and re.fullmatch(r"[0-9a-f]{64}", first)
    for png in ("duration_hist.png", "rate_hist.png", "README.md"):
        assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    _, edited = _spoil(clips, transcripts, "src-a_0002", None, {"text": "Nobody expected the meeting to end."})
    assert _build(tmp_path, clips, edited, clips_dir, name="c").summary["fingerprint"] != first


def test_stage_writes_metrics_plots_and_provenance(tmp_path, corpus, write_params):
    clips, transcripts, clips_dir = corpus
    clips, transcripts = _spoil(clips, transcripts, TARGET, {"speaker_similarity": 0.4}, None)
    clips.to_parquet(clips_dir / "manifest.parquet")
    (tmp_path / "tr").mkdir()
    transcripts.to_parquet(tmp_path / "tr" / "manifest.parquet")
    (tmp_path / "raw").mkdir()
    pd.DataFrame([{"source_id": "src-a", "kind": "file", "origin": "talk.wav", "title": "A talk", "channel": "",
                   "upload_date": "", "license": "CC0", "audio_path": "src-a.wav", "duration_s": 100.0,
                   "sha256": "0" * 64, "downloaded_at": "", "speaker": "ann"}]).to_parquet(
        tmp_path / "raw" / "manifest.parquet")
    params = write_params({"build_dataset": {"min_val_clips": 2}})
    argv = ["--params", str(params), "--clips", str(clips_dir), "--transcripts", str(tmp_path / "tr"), "--raw",
            str(tmp_path / "raw"), "--out", str(tmp_path / "ds"), "--metrics", str(tmp_path / "m" / "dataset.json"),
            "--plots", str(tmp_path / "m" / "clips.csv")]
    assert stage.main(argv) == 0
    metrics = json.loads((tmp_path / "m" / "dataset.json").read_text())
    assert {"hours", "clips", "train", "val", "dropped", "fingerprint"} <= set(metrics)
    assert metrics["dropped"] == {r: int(r == "other_speaker") for r in REASONS}
    assert metrics["clips"] == metrics["train"] + metrics["val"] == 9
    plot = pd.read_csv(tmp_path / "m" / "clips.csv")
    assert len(plot) == 10 and plot["kept"].sum() == 9
    assert list(plot.columns) == list(dataset.PLOT_COLUMNS)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| `src-a` | A talk | ann | CC0 | talk.wav | 9 | 10 |" in card
    assert "license: cc0" in card
    speakers = pd.read_parquet(tmp_path / "ds" / "dataset.parquet", columns=["speaker_id"])["speaker_id"]
    assert set(speakers) == {"ann"}


def test_every_param_reaches_the_library_with_its_default():
    from dataclasses import fields

    from voicemill import params

    library = {f.name: f.default for f in fields(DatasetOptions)}
    section = {f.name: f.default for f in fields(params.BuildDatasetParams)}
    assert {k: library[k] for k in section} == section
    _, opts = params.load(params.Path(__file__).resolve().parents[1] / "params.yaml", "build_dataset")
    assert params.fill(DatasetOptions, opts).rate_iqr_k == opts.rate_iqr_k


def test_neighbouring_clips_that_say_one_sentence_are_joined(tmp_path, corpus):
    from voicemill.audio import read_wav

    clips, transcripts, clips_dir = corpus
    a, b = "src-a_0003", "src-a_0004"
    # Segment cut a sentence at a long comma pause: b starts 0.3 s after a ends and goes on in lower case.
    end_a = float(clips.loc[clips["clip_id"] == a, "end_s"].iloc[0])
    length_b = float(clips.loc[clips["clip_id"] == b, "duration_s"].iloc[0])
    clips, transcripts = _spoil(clips, transcripts, b, {"start_s": end_a + 0.3, "end_s": end_a + 0.3 + length_b},
                                {"text": "please bring them along to the market."})
    clips, transcripts = _spoil(clips, transcripts, a, None, {"text": "If you grow more beans than you can eat."})
    # (the speaking-rate fence off: the texts changed, the test audio did not)
    result = _build(tmp_path, clips, transcripts, clips_dir, rate_iqr_k=0.0)
    joined = f"{a}_0004"
    assert result.summary["joined"] == 1 and result.summary["clips"] == 9
    rows = {line.split("|")[0]: line.split("|") for line in (tmp_path / "ds" / "metadata.csv").read_text().splitlines()}
    assert a not in rows and b not in rows
    # The full stop the ASR put at the cut is a comma now.
    assert rows[joined][1] == "If you grow more beans than you can eat, please bring them along to the market."
    audio, rate = read_wav(tmp_path / "ds" / "wavs" / f"{joined}.wav")
    parts = clips.set_index("clip_id").loc[[a, b], "duration_s"]
    assert abs(len(audio) / rate - (parts.sum() + 0.3)) < 2 / rate
    verdict = result.clips.set_index("clip_id")
    assert verdict.loc[a, "joined_into"] == verdict.loc[b, "joined_into"] == joined
    assert verdict.loc[a, "split"] == verdict.loc[b, "split"] != ""

    # Labels that end a sentence are not joined, nor is anything with join_max_pause_s 0.
    plain = _spoil(clips, transcripts, b, None, {"text": "Please bring them along to the market."})
    assert _build(tmp_path, *plain, clips_dir, name="ds2", rate_iqr_k=0.0).summary["joined"] == 0
    assert _build(tmp_path, clips, transcripts, clips_dir, name="ds3", rate_iqr_k=0.0,
                  join_max_pause_s=0.0).summary["joined"] == 0
