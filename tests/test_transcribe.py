"""The transcribe stage and its parts: subtitles first, fallback model, language and hallucination checks, truth WER.

Speech is made here by the bundled Piper voice; ASR runs the bundled tiny.en
and base models for real.
"""

import json

import numpy as np
import pandas as pd
import pytest
import soxr

from stages import transcribe
from voicemill import asr, manifest, subtitles, transcription
from voicemill.audio import write_wav

# ASR text (CTranslate2's int8 kernels) on Piper audio (ONNX Runtime): both move by CPU.
pytestmark = pytest.mark.machine

VTT = """\ufeffWEBVTT
Kind: captions
Language: en

NOTE made by a person, not a machine

STYLE
::cue { color: yellow }

1
00:00:01.000 --> 00:00:03.500 align:start position:0%
<v Anna>Hello &amp; welcome</v> to the <c.yellow>show</c>.

00:03.600 --> 00:05.000
- [Music] ANNA: Today we bake bread.

00:00:05.000 --> 00:00:06.000
♪ la la la ♪

00:00:07.000 --> 00:00:09,000
(laughs)
"""


def test_parse_vtt_keeps_spoken_words_only():
    cues = subtitles.parse_vtt(VTT)
    assert [(c.start_s, c.end_s) for c in cues] == [(1.0, 3.5), (3.6, 5.0), (5.0, 6.0), (7.0, 9.0)]
    assert [c.text for c in cues] == ["Hello & welcome to the show.", "Today we bake bread.", "", ""]


def test_read_vtt_rejects_another_format(tmp_path):
    path = tmp_path / "x.en.vtt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nan SRT file\n")
    with pytest.raises(subtitles.SubtitlesError, match="x.en.vtt: not a WebVTT file"):
        subtitles.read_vtt(path)


@pytest.mark.parametrize("start, end, expected", [
    (0.8, 5.2, "Hello & welcome to the show. Today we bake bread."),  # both cues inside
    (0.8, 3.55, "Hello & welcome to the show."),  # the next cue starts in the padding: slop, not split
    (2.0, 5.2, None),  # the first cue runs across the clip's start: its text cannot be split
    (6.5, 9.5, None),  # only a non-speech cue
    (0.8, 12.0, None),  # the cues cover too little of the clip
])
def test_cues_fit_a_clip_or_not(start, end, expected):
    cues = subtitles.parse_vtt(VTT)
    assert subtitles.text_for_clip(cues, start, end, tolerance_s=0.3, min_coverage=0.5) == expected


def test_find_takes_the_language_or_a_variant(tmp_path):
    (tmp_path / "src.en-GB.vtt").write_text("WEBVTT\n")
    (tmp_path / "src.de.vtt").write_text("WEBVTT\n")
    assert subtitles.find(tmp_path, "src", "en").name == "src.en-GB.vtt"
    assert subtitles.find(tmp_path, "src", "da") is None
    assert subtitles.find(tmp_path / "none", "src", "en") is None


# ------------------------------------------------------------ real speech

SENTENCES = {
    "src-a": ["The night train to the coast leaves from platform seven.",
              "It was first built in 1962, and it still runs three times a week.",
              "Breakfast is included, and the coffee is surprisingly good."],
    # src-b has human subtitles: its first clip is covered by cues, its second is not.
    "src-b": ["Good evening, and welcome to the garden report.",
              "Plant your beans in the first week of May."],
}
SUBTITLE_TEXT = "Good evening and welcome to the garden report!"
TRIM_B = 100.0  # src-b was downloaded with `start: 100`: its cues are 100 s later
PAUSE_S, PAD_S = 1.0, 0.2


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory):
    """The bundled base model joined once for this module, outside the home folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOICEMILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory, piper_voice):
    """A segment-like output: clips of two sources, a dataset row, ground truth, subtitles, sources.json."""
    from voicemill.demo import synthesize

    root = tmp_path_factory.mktemp("clips")
    (root / "wavs").mkdir()
    rows, truths = [], {}
    for source_id, sentences in SENTENCES.items():
        t, truth_sentences = 0.5, []
        for i, text in enumerate(sentences):
            audio, rate = synthesize(piper_voice, text)
            pad = np.zeros(int(PAD_S * rate), dtype=np.float32)
            clip = np.concatenate([pad, audio, pad])
            clip_id = f"{source_id}_{i:04d}"
            write_wav(root / "wavs" / f"{clip_id}.wav", clip, rate)
            duration = len(clip) / rate
            rows.append({"clip_id": clip_id, "source_id": source_id, "path": f"wavs/{clip_id}.wav", "start_s": t,
                         "end_s": t + duration, "duration_s": duration, "sample_rate": rate, "loudness_lufs": -23.0,
                         "peak": 0.5, "clipped_share": 0.0, "source_text": "",
                         "silence_share": 2 * PAD_S / duration})
            truth_sentences.append({"index": i, "text": text, "start_s": t + PAD_S, "end_s": t + duration - PAD_S})
            t += duration + PAUSE_S
        truths[source_id] = {"episode": source_id, "sample_rate": 22050, "duration_s": t, "sentences": truth_sentences}
    # a Parquet-dataset row that brought its own transcript
    audio, rate = synthesize(piper_voice, "Thank you.")
    write_wav(root / "wavs" / "ds-1_0000.wav", audio, rate)
    rows.append({"clip_id": "ds-1_0000", "source_id": "ds-1", "path": "wavs/ds-1_0000.wav", "start_s": 0.0,
                 "end_s": len(audio) / rate, "duration_s": len(audio) / rate, "sample_rate": rate,
                 "loudness_lufs": -23.0, "peak": 0.5, "clipped_share": 0.0, "source_text": "Thank you kindly.",
                 "silence_share": 0.1})
    # segment's other measures do not matter here: NaN for any the clips schema requires
    for row in rows:
        row.setdefault("speech_start_s", PAD_S)
        row.setdefault("speech_end_s", row["duration_s"] - PAD_S)
        for column in manifest.SCHEMAS["clips"][1]:
            row.setdefault(column, float("nan"))
    manifest.write(pd.DataFrame(rows), root / "manifest.parquet", "clips")
    (root / "truth").mkdir()
    (root / "truth" / "src-a.json").write_text(json.dumps(truths["src-a"]))
    b0 = next(r for r in rows if r["clip_id"] == "src-b_0000")
    b1 = next(r for r in rows if r["clip_id"] == "src-b_0001")
    (root / "subtitles").mkdir()
    (root / "subtitles" / "src-b.en.vtt").write_text(
        "WEBVTT\n\n"
        f"{_ts(TRIM_B + b0['start_s'] + 0.1)} --> {_ts(TRIM_B + b0['end_s'] - 0.1)}\n{SUBTITLE_TEXT}\n\n"
        # a cue that runs from the middle of the second clip far past its end
        f"{_ts(TRIM_B + b1['start_s'] + 1.0)} --> {_ts(TRIM_B + b1['end_s'] + 3.0)}\nPlant your beans, and more.\n")
    (root / "sources.json").write_text(json.dumps([{"source_id": "src-a", "start_s": None},
                                                   {"source_id": "src-b", "start_s": TRIM_B}]))
    return root


def _ts(seconds: float) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:06.3f}"


def _run(tmp_path, write_params, clips_dir, sections, name="tr"):
    code = transcribe.main(["--params", str(write_params(sections)), "--clips", str(clips_dir), "--out",
                            str(tmp_path / name), "--metrics", str(tmp_path / f"{name}.json")])
    assert code == 0
    table = pd.read_parquet(tmp_path / name / "manifest.parquet").set_index("clip_id")
    return table, json.loads((tmp_path / f"{name}.json").read_text())


def test_stage_subtitles_first_then_asr_with_truth_metrics(tmp_path, write_params, clips_dir, measure):
    table, metrics = _run(tmp_path, write_params, clips_dir, {"transcribe": {"cpu_threads": 2}})
    assert set(table.index) == {"src-a_0000", "src-a_0001", "src-a_0002", "src-b_0000", "src-b_0001", "ds-1_0000"}
    assert table.loc["src-b_0000", "text_source"] == "subtitles"
    assert table.loc["src-b_0000", "text"] == SUBTITLE_TEXT
    assert "garden report" in table.loc["src-b_0000", "asr_text"].lower()  # the ASR still ran, for the check
    assert table.loc["src-b_0001", "text_source"] == "asr"  # the cue runs past the clip: ASR
    assert table.loc["ds-1_0000", "text_source"] == "dataset"
    assert table.loc["ds-1_0000", "text"] == "Thank you kindly." and table.loc["ds-1_0000", "chosen_model"] == ""
    asr_rows = table[table["text_source"] == "asr"]
    assert (asr_rows["model"] == "tiny.en").all() and (asr_rows["chosen_model"] == "tiny.en").all()
    assert (asr_rows["text"] == asr_rows["asr_text"]).all() and (asr_rows["fallback_text"] == "").all()
    assert (asr_rows["packed_clips"] >= 1).all() and asr_rows["packed_clips"].max() > 1
    assert (table["hallucination"] == "").all(), table["hallucination"]
    assert not table["language_mismatch"].any()
    words = json.loads(table.loc["src-a_0001", "words"])
    assert words and all(0 <= w["start_s"] <= w["end_s"] <= table.loc["src-a_0001", "packed_clips"] * 30
                         for w in words)
    options = json.loads(table.loc["src-a_0000", "asr_options"])
    assert options["model"] == "tiny.en" and options["batch_size"] == 8 and options["device"] in ("cpu", "cuda")

    assert metrics["by_text_source"] == {"asr": 4, "subtitles": 1, "dataset": 1}
    assert metrics["subtitles"]["clips"] == 1 and measure("subtitles_asr_wer", metrics["subtitles"]["asr_wer"]) <= 0.2
    truth = metrics["truth"]
    assert truth["sources"] == 1 and truth["sentences"] == truth["sentences_covered"] == 3
    assert truth["words"] == 10 + 16 + 9  # "1962" is "nineteen sixty two" for scoring
    assert measure("truth_wer", truth["wer"]) <= 0.1 and measure("truth_cer", truth["cer"]) <= 0.1
    assert metrics["flagged"]["hallucination"] == 0


def test_stage_fallback_model_for_low_scores(tmp_path, write_params, clips_dir, base_cache):
    # fallback_below 0: every ASR clip is below it, so every one is transcribed again with base.
    table, metrics = _run(tmp_path, write_params, clips_dir,
                          {"transcribe": {"cpu_threads": 2, "fallback_model": "base", "fallback_below": 0.0}})
    asr_rows = table[table["text_source"] != "dataset"]
    assert metrics["fallback"] == {"model": "base", "tried": len(asr_rows), "chosen": metrics["fallback"]["chosen"]}
    for row in asr_rows.itertuples():
        assert row.fallback_text and row.primary_text
        best = max(row.primary_avg_logprob, row.fallback_avg_logprob)
        assert row.avg_logprob == pytest.approx(best)
        assert row.chosen_model == ("base" if row.fallback_avg_logprob > row.primary_avg_logprob else "tiny.en")
        assert row.asr_text == (row.fallback_text if row.chosen_model == "base" else row.primary_text)
    assert json.loads(table.loc["src-a_0000", "asr_options"])["fallback"] == {"model": "base", "below": 0.0}


def test_stage_marks_clips_in_another_language(tmp_path, write_params, clips_dir, base_cache):
    # A Danish dataset that holds English speech: base detects English on every clip.
    table, metrics = _run(tmp_path, write_params, clips_dir, {
        "common": {"language": "da"},
        "transcribe": {"cpu_threads": 2, "model": "base", "language": "auto", "language_mismatch_probability": 0.5}})
    heard = table[table["text_source"] == "asr"]
    assert (heard["language"] == "en").all() and (heard["language_probability"] > 0.5).all()
    assert heard["language_mismatch"].all()
    assert not table.loc["ds-1_0000", "language_mismatch"]  # the dataset's own transcript was not listened to
    assert metrics["flagged"]["language_mismatch"] == len(heard)
    assert "subtitles" not in metrics  # the subtitles are English, the dataset is Danish


def test_language_mismatch_on_detected_languages(piper_voice, base_cache, measure):
    from voicemill.demo import synthesize

    audio, rate = synthesize(piper_voice, "The community garden on Third Street now has sixty-four plots.")
    model = asr.load_model("base", cpu_threads=2)
    [(language, probability)] = asr.detect_languages(model, [soxr.resample(audio, rate, asr.ASR_RATE)])
    assert language == "en" and measure("probability", probability) > 0.5
    assert asr.language_mismatch(language, probability, "da", 0.5)
    assert not asr.language_mismatch(language, probability, "en", 0.5)
    assert not asr.language_mismatch(language, probability, "en-GB", 0.5)
    assert not asr.language_mismatch(language, probability, "da", probability)  # not sure enough


def test_english_only_model_on_a_danish_dataset_fails_with_the_fix(tmp_path, write_params, clips_dir, capsys):
    code = transcribe.main(["--params", str(write_params({"common": {"language": "da"}})), "--clips",
                            str(clips_dir), "--out", str(tmp_path / "tr"), "--metrics", str(tmp_path / "m.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert "'tiny.en' is English-only" in err and "transcribe.model: base" in err


def test_bad_language_param_names_the_choices(tmp_path, write_params, clips_dir, capsys):
    code = transcribe.main(["--params", str(write_params({"transcribe": {"language": "english"}})), "--clips",
                            str(clips_dir), "--out", str(tmp_path / "tr"), "--metrics", str(tmp_path / "m.json")])
    assert code == 1 and "transcribe.language must be '' " in capsys.readouterr().err


def test_hallucination_flags_on_real_transcripts(piper_voice):
    """A looping phrase and speech lost in silence, as tiny.en really transcribes them."""
    from voicemill.demo import synthesize

    model = asr.load_model("tiny.en", cpu_threads=2)
    loop, rate = synthesize(piper_voice, "Thank you, thank you, thank you, thank you, thank you.")
    word, _ = synthesize(piper_voice, "Yes.")
    mostly_silent = np.concatenate([word, np.zeros(8 * rate, dtype=np.float32)])
    clips = [soxr.resample(a, rate, asr.ASR_RATE) for a in (loop, mostly_silent)]
    heard = asr.transcribe_clips(model, clips, "en", asr.DecodeOptions(batch_size=1))
    silence = transcription.estimate_silence_share(mostly_silent, rate)
    assert silence > 0.8
    assert "repeat" in asr.hallucination_flags(heard[0]["text"], len(loop) / rate, 0.1, "en"), heard[0]["text"]
    assert heard[1]["text"], "tiny.en heard the word"
    assert "silence" in asr.hallucination_flags(heard[1]["text"], len(mostly_silent) / rate, silence, "en")


def test_score_texts_prefers_what_was_said_under_both_models(piper_voice, base_cache, measure):
    from voicemill.demo import synthesize

    said = "Please water the plants while I am away."
    audio, rate = synthesize(piper_voice, said)
    audio = soxr.resample(audio, rate, asr.ASR_RATE)
    for name in ("tiny.en", "base"):
        model = asr.load_model(name, cpu_threads=2)
        right, misheard, cut, empty = asr.score_texts(model, audio, [said, said.replace("water", "wash"),
                                                                     "Please water the plants while I", ""], "en")
        assert np.isnan(empty)
        # A wrong word and a text that stops short each cost several nats (measured 6-9 on both models).
        assert measure(f"{name}_margin_misheard", right - misheard) > 2.0
        assert measure(f"{name}_margin_cut", right - cut) > 2.0
    # A long sentence (about 25 tokens: CTranslate2 cuts a forced prefix at half of max_length) is scored too.
    said = "Every autumn the school holds a fair, and the children sell cakes, old toys, and plants they have grown."
    audio, rate = synthesize(piper_voice, said)
    model = asr.load_model("tiny.en", cpu_threads=2)
    texts = [said, said.replace("cakes", "bikes")]
    right, wrong = asr.score_texts(model, soxr.resample(audio, rate, asr.ASR_RATE), texts, "en")
    assert np.isfinite(right) and right - wrong > 2.0


def test_base_tokenizer_has_whisper_first_merge(base_cache):
    # The bundled base tokenizer.json lacks the merge "Ġ t" (its list starts at the second); mended on assembly,
    # " the" is one token again, as the model was trained on.
    model = asr.load_model("base", cpu_threads=1)
    assert len(model.hf_tokenizer.encode(" the", add_special_tokens=False).ids) == 1
    tiny = asr.load_model("tiny.en", cpu_threads=1)
    assert len(tiny.hf_tokenizer.encode(" the", add_special_tokens=False).ids) == 1


@pytest.mark.parametrize("first, second, expected", [
    ([-3.0, -9.0], [-2.0, -7.0], ("model", 11.0)),  # both prefer the first transcript
    ([-9.0, -3.0], [-8.0, -4.5], ("verify_model", 9.5)),  # both prefer the second
    ([-3.0, -9.0], [-7.0, -2.0], ("balanced", 1.0)),  # they disagree: undecided
    ([-3.0, -3.4], [-2.0, -2.3], ("balanced", 0.7)),  # both lean the same way, by less than the margin
    ([-3.0, float("nan")], [-2.0, -7.0], ("balanced", None)),
])
def test_arbitrate_keeps_what_both_models_prefer(first, second, expected):
    winner, margin = transcription.arbitrate(first, second, min_margin=1.0)
    assert winner == expected[0]
    assert (np.isnan(margin) if expected[1] is None else margin == pytest.approx(expected[1]))


def test_verify_settles_a_misheard_word_by_scoring_both_transcripts(clips_dir, base_cache):
    """The first model's text for one clip is replaced by a mishearing (one word wrong); the verify model (base)
    hears the clip right; both models, scoring both texts on the clip's audio, prefer base's: it is kept."""
    from voicemill import executor, params

    clips = manifest.read(clips_dir / "manifest.parquet", "clips")
    clips = clips[clips["source_text"] == ""].sort_values("clip_id").reset_index(drop=True)
    paths = [str(clips_dir / p) for p in clips["path"]]
    durations = [float(d) for d in clips["duration_s"]]
    opts = params.TranscribeParams(cpu_threads=2, verify_model="base", arbitration_margin=1.0)
    run = transcription.Asr(executor.Local(), opts, params.RayParams(), "en", paths, durations)
    decode = asr.DecodeOptions(beam_size=5, batch_size=1, initial_prompt="", seed=0)
    languages = ["en"] * len(paths)
    results = run.transcribe("tiny.en", list(range(len(paths))), languages, decode, "transcribe")
    for r in results:
        r["model"] = "tiny.en"
    k = 0
    said = results[k]["text"]
    words = said.split()
    misheard = " ".join(words[:1] + ["banana"] + words[2:])
    results[k]["text"] = misheard
    summary = transcription._verify(run, results, languages, decode, opts)
    assert summary["arbitration"]["disputed"] >= 1
    assert results[k]["label_agrees"] is False and results[k]["arbitration"] == "verify_model"
    assert results[k]["arbitration_margin"] > 1.0
    assert results[k]["text"] == results[k]["verify_text"] and results[k]["model"] == "base"
    assert results[k]["primary_text"] == misheard
    assert "banana" not in results[k]["text"].lower()


def test_sentence_break_hears_a_sentence_go_on_across_a_comma_pause(piper_voice):
    """Decoded apart, both halves of a sentence read as sentences; decoded together with the pause, Whisper
    hears the sentence go on (and hears two sentences as two)."""
    from voicemill.demo import synthesize

    def speech(text):
        audio, rate = synthesize(piper_voice, text)
        return soxr.resample(audio, rate, asr.ASR_RATE).astype(np.float32)

    model = asr.load_model("tiny.en", cpu_threads=2)
    opts = asr.DecodeOptions(beam_size=5, batch_size=1, initial_prompt="", seed=0)
    first, rest = speech("You ran the Valley Courier for thirty one years,"), speech("so you have seen the whole decline.")
    assert asr.transcribe(model, first, "en")["text"].endswith(".")  # alone, it reads as a whole sentence
    assert asr.sentence_break(model, first, rest, 0.3, "en", opts) == "no"
    one, two = speech("The ticket costs eighteen dollars."), speech("Please water the plants while I am away.")
    assert asr.sentence_break(model, one, two, 0.3, "en", opts) == "yes"
    assert asr.sentence_break(model, one, np.zeros(8000, np.float32), 0.3, "en", opts) == ""  # nothing after
