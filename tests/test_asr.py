import pytest
import soxr

from voicemill import asr
from voicemill.scoring import wer


def test_unknown_local_path_lists_what_is_accepted(tmp_path):
    with pytest.raises(asr.ModelError, match="tiny.en"):
        asr.resolve_model(str(tmp_path / "no-such-model"))


def test_local_dir_without_model_bin(tmp_path):
    with pytest.raises(asr.ModelError, match="model.bin"):
        asr.resolve_model(str(tmp_path))


def test_hub_name_is_passed_through():
    assert asr.resolve_model("large-v3") == "large-v3"


def test_auto_device_on_cpu():
    device, compute = asr.pick_device("auto", "auto")
    assert (device, compute) in {("cpu", "int8"), ("cuda", "float16")}


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_bundled_models_transcribe_piper_speech(name, piper_voice, tmp_path, monkeypatch):
    from voicemill.demo import synthesize

    monkeypatch.setenv("VOICEMILL_CACHE", str(tmp_path))
    text = "The night train to the coast leaves from platform seven."
    audio, rate = synthesize(piper_voice, text)
    model = asr.load_model(name, cpu_threads=2)
    result = asr.transcribe(model, soxr.resample(audio, rate, asr.ASR_RATE), "en")
    assert wer(text, result["text"]) <= 0.2, result["text"]
    assert result["language"] == "en"
    assert 0 < result["confidence"] <= 1
    assert result["words"] and result["words"][0]["end_s"] > result["words"][0]["start_s"]
    if name == "base":
        assert (tmp_path / "whisper-base" / "model.bin").exists()
