import pytest

from voicemill import params
from voicemill.params import ParamsError


def test_defaults_load(write_params):
    common, seg = params.load(write_params({}), "segment")
    assert common.sample_rate_hz == 22050
    assert seg.max_duration_s == 12.0


def test_repo_params_file_is_valid():
    from tests.conftest import REPO

    for section in params.SECTIONS:
        if section != "common":
            params.load(REPO / "params.yaml", section)


def test_unknown_key_names_the_key(write_params):
    path = write_params({"segment": {"max_duraton_s": 10}})
    with pytest.raises(ParamsError, match="max_duraton_s"):
        params.load(path, "segment")


def test_wrong_type_names_the_key(write_params):
    path = write_params({"train": {"lr": "fast"}})
    with pytest.raises(ParamsError, match=r"train\.lr"):
        params.load(path, "train")


def test_int_accepted_for_float(write_params):
    _, t = params.load(write_params({"train": {"lr": 1}}), "train")
    assert t.lr == 1.0 and isinstance(t.lr, float)


def test_exponent_floats_yaml_reads_as_strings_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads 5e-06 without a dot as a string; `dvc exp run -S train.lr_adapt=5e-6` writes that.
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr_adapt: 5e-06\n  lr: 2.0E-4\n")
    _, t = params.load(path, "train")
    assert t.lr_adapt == 5e-06 and t.lr == 2e-4
    path.write_text("train:\n  lr: 5e\n")
    with pytest.raises(ParamsError, match=r"train\.lr"):
        params.load(path, "train")


def test_unknown_section(write_params):
    with pytest.raises(ParamsError, match="trian"):
        params.load(write_params({"trian": {}}), "train")


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        params.load(tmp_path / "nope.yaml", "train")


def test_fill_copies_matching_fields_first_section_wins():
    from voicemill.dataset import DatasetOptions
    from voicemill.segment import CutPolicy

    common = params.CommonParams(seed=99, language="da")
    opts = params.BuildDatasetParams(val_share=0.2)
    filled = params.fill(DatasetOptions, opts, common)
    assert (filled.seed, filled.language, filled.val_share) == (99, "da", 0.2)
    policy = params.fill(CutPolicy, params.SegmentParams(max_duration_s=9.0))
    assert policy.max_duration_s == 9.0
