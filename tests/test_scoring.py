import numpy as np
import pytest

from voicemill import scoring


def test_edit_distance_and_error_counts():
    assert scoring.edit_distance(list("kitten"), list("sitting")) == 3
    c = scoring.error_counts("It costs $5.", "it costs five dollars")
    assert c["word_errors"] == 0 and c["words"] == 4
    assert scoring.wer("the cat sat on the mat", "the dog sat on a mat") == pytest.approx(2 / 6)


@pytest.fixture(scope="module")
def sentence(piper_voice):
    from voicemill.demo import synthesize

    return synthesize(piper_voice, "A loaf of sourdough costs four dollars, and the shop closes at six.")


@pytest.mark.machine
def test_dnsmos_drops_with_heavy_noise(sentence, measure):
    audio, rate = sentence
    noisy = audio + np.random.default_rng(0).normal(0, 0.3, audio.size).astype(np.float32)
    clean, dirty = scoring.dnsmos(audio, rate), scoring.dnsmos(noisy, rate)
    measure("dnsmos_ovrl_clean", clean["dnsmos_ovrl"])
    measure("dnsmos_ovrl_noisy", dirty["dnsmos_ovrl"])
    assert clean["dnsmos_ovrl"] > dirty["dnsmos_ovrl"] + 0.5
    assert clean["dnsmos_bak"] > dirty["dnsmos_bak"]
    distill = scoring.DistillMOS()
    assert measure("distillmos_clean", distill(audio, rate)) > measure("distillmos_noisy", distill(noisy, rate)) + 1.0


@pytest.mark.machine
def test_round_trip_wer_rises_for_the_wrong_transcript(sentence, measure):
    from voicemill import asr

    audio, rate = sentence
    heard = asr.transcribe(asr.load_model("tiny.en", cpu_threads=2), scoring.to_16k(audio, rate), "en")["text"]
    right = "A loaf of sourdough costs four dollars, and the shop closes at six."
    wrong = "The night train to the coast leaves from platform seven."
    # What a round-trip score must do: the right text scores far below a wrong one. tiny.en misses a
    # word or two of these 13 depending on the CPU's int8 kernels (0.08-0.15 measured; "cost for").
    right_wer, wrong_wer = measure("wer_right", scoring.wer(right, heard)), measure("wer_wrong", scoring.wer(wrong, heard))
    assert right_wer <= 0.35 and wrong_wer >= 0.8 and wrong_wer > right_wer + 0.5, heard


@pytest.mark.machine
def test_speaker_similarity_separates_voices(sentence, piper_voice, measure):
    import soxr

    from voicemill.demo import synthesize

    audio, rate = sentence
    other_text, _ = synthesize(piper_voice, "Plant your beans in the first week of May.")
    # A crude "other speaker": the same voice pitched up by resampling (formants move too).
    shifted = soxr.resample(audio, rate, int(rate * 0.7))
    enc = scoring.SpeakerEncoder()
    ref = enc.embed(other_text, rate)
    same = scoring.cosine(enc.embed(audio, rate), ref)
    different = scoring.cosine(enc.embed(shifted, rate), ref)
    measure("same", same)
    measure("different", different)
    assert same > 0.8 and same > different + 0.1


def test_validity_flags():
    rate = 16000
    assert scoring.validity(np.zeros(0, np.float32), rate, "hi") == "empty"
    assert scoring.validity(np.zeros(rate, np.float32), rate, "hi") == "silent"
    assert scoring.validity(np.ones(rate, np.float32), rate, "hi") == "clipped"
    tone = 0.1 * np.sin(np.arange(rate * 30) / 10).astype(np.float32)
    assert scoring.validity(tone, rate, "hi") == "too_long"
    assert scoring.validity(tone[: rate], rate, "hello there") == ""
