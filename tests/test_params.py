"""The params schema: one declaration per option, from which loading, checks, --help and the README derive."""

import dataclasses

import pytest
import yaml

from tests.conftest import REPO
from voicemill import params
from voicemill.params import ParamsError


def test_defaults_load(write_params):
    common, seg = params.load(write_params({}), "segment")
    assert common.sample_rate_hz == 22050
    assert seg.max_duration_s == 12.0


def test_the_shipped_params_file_holds_exactly_the_declared_defaults():
    loaded = {name: dataclasses.asdict(section) for name, section in params.load_all(REPO / "params.yaml").items()}
    assert loaded == params.defaults()


def test_library_options_take_their_defaults_from_the_declarations():
    from voicemill.asr import CheckOptions, DecodeOptions
    from voicemill.dataset import DatasetOptions
    from voicemill.download import FetchOptions
    from voicemill.evaluate import EvalOptions
    from voicemill.segment import ClipOptions, CutPolicy
    from voicemill.tts.training import TrainOptions
    from voicemill.tts.variants import VariantOptions

    declared = params.defaults()
    for cls in (CheckOptions, DecodeOptions, DatasetOptions, FetchOptions, EvalOptions, ClipOptions, CutPolicy,
                TrainOptions, VariantOptions):
        instance = cls()
        shared = 0
        for f in dataclasses.fields(cls):
            owners = [s for s in declared.values() if f.name in s]
            if owners:
                shared += 1
                assert getattr(instance, f.name) in [o[f.name] for o in owners], (cls.__name__, f.name)
        assert shared, cls.__name__


def test_a_library_option_that_is_no_param_needs_its_own_default():
    with pytest.raises(TypeError, match="no_such_option"):
        @dataclasses.dataclass
        @params.defaults_from("segment")
        class Options:
            no_such_option: int


def test_train_preset_choices_match_the_presets():
    from voicemill.tts.presets import PRESETS

    assert set(params.PRESET_NAMES) == set(PRESETS)


@pytest.mark.parametrize("section, key, value, expected", [
    ("segment", "min_pause_ms", -450, r"segment\.min_pause_ms: -450 ms is out of range; expected 30 \.\. 10000 ms"),
    ("train", "epochs", 0, r"train\.epochs: 0 epochs is out of range; expected >= 1"),
    ("build_dataset", "val_share", 2.0, r"build_dataset\.val_share: 2\.0 is out of range; expected >= 0 and < 1"),
    ("transcribe", "batch_size", -3, r"transcribe\.batch_size: -3 is out of range; expected 0 \.\. 256"),
    ("download", "retries", -1, r"download\.retries: -1 is out of range"),
    ("common", "sample_rate_hz", 0, r"common\.sample_rate_hz: 0 Hz is out of range; expected 8000 \.\. 96000 Hz"),
    ("evaluate", "max_utterances", 0, r"evaluate\.max_utterances: 0 is out of range; expected >= 1"),
    ("segment", "frame_ms", 25, r"segment\.frame_ms: 25 is not allowed; expected 10, 20 or 30"),
    ("train", "adapt_parts", ["flow", "wings"], r"train\.adapt_parts: 'wings' is not allowed"),
    ("train", "precision", "fp8", r"train\.precision: 'fp8' is not allowed; expected fp32, bf16 or fp16"),
    ("build_dataset", "min_dnsmos_ovrl", 0.5, r"min_dnsmos_ovrl: 0\.5 is out of range; expected 0 \(off\) or 1 \.\. 5"),
    ("train", "lr", float("nan"), r"train\.lr: expected a finite number"),
])
def test_a_value_out_of_range_names_the_key_the_value_and_the_range(write_params, section, key, value, expected):
    path = write_params({section: {key: value}})
    with pytest.raises(ParamsError, match=expected) as e:
        params.load(path, "segment")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_zero_means_off_where_declared(write_params):
    _, opts = params.load(write_params({"build_dataset": {"min_dnsmos_ovrl": 0}}), "build_dataset")
    assert opts.min_dnsmos_ovrl == 0


def test_related_params_are_checked_together(write_params):
    path = write_params({"segment": {"min_duration_s": 12.0, "max_duration_s": 10.0}})
    with pytest.raises(ParamsError, match=r"segment\.min_duration_s \(12\.0\) must be smaller"):
        params.load(path, "segment")


def test_a_missing_key_is_an_error_that_names_it_and_its_default(tmp_path):
    full = params.defaults()
    del full["segment"]["min_pause_ms"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(full))
    with pytest.raises(ParamsError, match=r"segment\.min_pause_ms is missing; add 'min_pause_ms: 450' under "
                                          r"'segment:' \(a pause this long ends a speech region"):
        params.load(path, "segment")


def test_a_missing_section_is_an_error_that_names_it(tmp_path):
    full = params.defaults()
    del full["segment"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(full))
    with pytest.raises(ParamsError, match=r"the section 'segment:' is missing"):
        params.load(path, "train")  # every stage checks the whole file


def test_unknown_key_names_the_key(write_params):
    path = write_params({"segment": {"max_duraton_s": 10}})
    with pytest.raises(ParamsError, match="max_duraton_s"):
        params.load(path, "segment")


def test_wrong_type_names_the_key(write_params):
    path = write_params({"train": {"lr": "fast"}})
    with pytest.raises(ParamsError, match=r"train\.lr: expected a number, got 'fast'"):
        params.load(path, "train")


def test_int_accepted_for_float(write_params):
    _, t = params.load(write_params({"train": {"lr": 1}}), "train")
    assert t.lr == 1.0 and isinstance(t.lr, float)


def test_exponent_floats_yaml_reads_as_strings_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads 5e-06 without a dot as a string; `dvc exp run -S train.lr_adapt=5e-6` writes that.
    text = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("lr_adapt: 0.00001", "lr_adapt: 5e-06").replace("lr: 0.0002", "lr: 2.0E-4"))
    _, t = params.load(path, "train")
    assert t.lr_adapt == 5e-06 and t.lr == 2e-4
    path.write_text(text.replace("lr: 0.0002", "lr: 5e"))
    with pytest.raises(ParamsError, match=r"train\.lr"):
        params.load(path, "train")


def test_unknown_section(write_params):
    with pytest.raises(ParamsError, match="trian"):
        params.load(write_params({"trian": {}}), "train")


def test_missing_file_binary_file_and_folder(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        params.load(tmp_path / "nope.yaml", "train")
    binary = tmp_path / "params.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 64)
    with pytest.raises(ParamsError, match=f"{binary}: not a text file"):
        params.load(binary, "train")
    with pytest.raises(ParamsError, match="is a folder"):
        params.load(tmp_path, "train")


def test_fill_copies_matching_fields_first_section_wins():
    from voicemill.dataset import DatasetOptions
    from voicemill.segment import CutPolicy

    common = params.CommonParams(seed=99, language="da")
    opts = params.BuildDatasetParams(val_share=0.2)
    filled = params.fill(DatasetOptions, opts, common)
    assert (filled.seed, filled.language, filled.val_share) == (99, "da", 0.2)
    policy = params.fill(CutPolicy, params.SegmentParams(max_duration_s=9.0))
    assert policy.max_duration_s == 9.0


def test_the_readme_params_table_is_generated_from_the_declarations():
    text = (REPO / "README.md").read_text()
    assert params.readme_with_table(text) == text, "run: python -m voicemill.params --readme README.md"
    for section, cls in params.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"`{section}.{f.name}`" in text


def test_each_stage_help_lists_the_params_it_reads(capsys):
    from stages import segment, train

    with pytest.raises(SystemExit):
        segment.main(["--help"])
    out = capsys.readouterr().out
    assert "segment.min_pause_ms = 450  (ms, 30 .. 10000)" in out and "common.sample_rate_hz" in out
    assert "build_dataset.min_speaker_similarity" in out and "train.lr" not in out
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    assert "train.precision = fp32  (fp32, bf16 or fp16)" in out and "evaluate.asr_model" in out
