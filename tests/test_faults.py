"""Faults that must leave the data whole: bad entries, failed runs, full and read-only disks, leftovers.

Each case gives one line naming the entry, key or path (no traceback), exits
1 where the run cannot go on, and loses no earlier good item. Kill -9 in
each of the seven stages followed by `dvc repro` is in test_e2e (it needs
the demo pipeline).
"""

import contextlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from stages import build_dataset, download, segment, transcribe
from tests.conftest import ffmpeg_tone, params_file
from voicemill.fsutil import sha256_file


def _state(folder: Path) -> dict[str, str]:
    """Every file in a folder with its sha256."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _error_line(capsys_text: str, stage: str) -> str:
    (line,) = [line for line in _lines(capsys_text) if f"{stage} failed:" in line]
    assert "Traceback" not in capsys_text
    return line


@contextlib.contextmanager
def _mounted(folder: Path, size: str, read_only: bool = False):
    """A small tmpfs at ``folder`` (root only): a disk that fills, or a read-only one."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the disk-full and read-only cases need root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _run_download(tmp_path: Path, body: str, params: Path) -> int:
    (tmp_path / "sources.yaml").write_text(body)
    return download.main(["--params", str(params), "--sources", str(tmp_path / "sources.yaml"),
                          "--out", str(tmp_path / "raw")])


@pytest.fixture()
def tones(tmp_path):
    for i, name in enumerate("abcde"):
        ffmpeg_tone(tmp_path / f"{name}.wav", seconds=3.0, extra=["-af", f"volume={0.3 + 0.1 * i}"])
    return tmp_path


# ---------------------------------------------------------------- download


def test_a_trim_past_the_end_is_a_bad_entry_and_the_good_item_stays(tones, write_params, capsys):
    params = write_params({})
    assert _run_download(tones, "sources:\n  - source: a.wav\n  - source: b.wav\n", params) == 0
    before = _state(tones / "raw")
    # The second entry now starts past its 3 s recording: reported, and its earlier item is kept.
    capsys.readouterr()
    assert _run_download(tones, "sources:\n  - source: a.wav\n  - source: b.wav\n    start: '0:10'\n",
                         params) == 0
    assert "the entry's start (10 s) is past the end of the recording (3.0 s)" in capsys.readouterr().err
    failures = json.loads((tones / "raw" / "failures.json").read_text())
    assert len(failures) == 1 and failures[0]["origin"].endswith("b.wav") and failures[0]["line"] == 3
    rows = pd.read_parquet(tones / "raw" / "manifest.parquet")
    assert len(rows) == 2
    after = _state(tones / "raw")
    assert {k: v for k, v in after.items() if k.endswith(".wav")} == {
        k: v for k, v in before.items() if k.endswith(".wav")}
    # With that entry alone the run fails, and the folder stays as it was.
    before = _state(tones / "raw")
    capsys.readouterr()
    assert _run_download(tones, "sources:\n  - source: b.wav\n    start: 10\n", params) == 1
    assert "is as the last run left it" in _error_line(capsys.readouterr().err, "download")
    after = _state(tones / "raw")
    assert {k: v for k, v in after.items() if k != "failures.json"} == {
        k: v for k, v in before.items() if k != "failures.json"}


def test_a_minutes_seconds_trim_with_seconds_over_59_is_rejected_before_anything_is_fetched(tones, write_params,
                                                                                          capsys):
    assert _run_download(tones, "sources:\n  - source: a.wav\n    start: '1:99'\n", write_params({})) == 1
    line = _error_line(capsys.readouterr().err, "download")
    assert "line 2: start: '1:99' is not a time" in line
    assert not (tones / "raw").exists()


def test_a_failed_run_leaves_the_manifest_and_every_file_it_lists(tones, write_params, capsys):
    params = write_params({})
    everything = "sources:\n" + "".join(f"  - source: {n}.wav\n" for n in "abcde")
    assert _run_download(tones, everything, params) == 0
    before = _state(tones / "raw")
    for name in "bcde":
        (tones / f"broken_{name}.flac").write_bytes(b"fLaC not really")
    mostly_broken = "sources:\n  - source: a.wav\n" + "".join(f"  - source: broken_{n}.flac\n" for n in "bcde")
    capsys.readouterr()
    assert _run_download(tones, mostly_broken, params) == 1
    assert "more than download.max_failed_share=0.5" in _error_line(capsys.readouterr().err, "download")
    after = _state(tones / "raw")
    assert {k: v for k, v in after.items() if k != "failures.json"} == {
        k: v for k, v in before.items() if k != "failures.json"}
    rows = pd.read_parquet(tones / "raw" / "manifest.parquet")
    assert len(rows) == 5 and all((tones / "raw" / p).exists() for p in rows["audio_path"])
    assert not list((tones / "raw").glob(".tmp-*"))


@pytest.mark.parametrize("body, message", [
    ("sources:\n  - source: 12345\n", "line 2: source: expected a string (a path, a URL or demo), got 12345 (int)"),
])
def test_a_source_that_is_not_a_string(tmp_path, write_params, capsys, body, message):
    assert _run_download(tmp_path, body, write_params({})) == 1
    assert message in _error_line(capsys.readouterr().err, "download")


def test_a_binary_sources_file_and_a_folder_for_sources(tmp_path, write_params, capsys):
    params = write_params({})
    (tmp_path / "sources.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 20)
    assert download.main(["--params", str(params), "--sources", str(tmp_path / "sources.yaml"),
                          "--out", str(tmp_path / "raw")]) == 1
    assert f"{tmp_path / 'sources.yaml'}: not a text file" in _error_line(capsys.readouterr().err, "download")
    capsys.readouterr()
    assert download.main(["--params", str(params), "--sources", str(tmp_path), "--out", str(tmp_path / "raw")]) == 1
    assert f"{tmp_path}: is a folder; --sources expects a sources file" in _error_line(capsys.readouterr().err,
                                                                                     "download")


def test_a_full_disk_in_download_stops_the_run_instead_of_blaming_the_source(tones, write_params, capsys):
    params = write_params({})
    with _mounted(tones / "raw", "96k"):
        ffmpeg_tone(tones / "long.wav", seconds=30.0)
        assert _run_download(tones, "sources:\n  - source: long.wav\n  - source: a.wav\n", params) == 1
        err = capsys.readouterr().err
        line = _error_line(err, "download")
        assert "No space left on device" in line and "the disk is full" in line and str(tones / "raw") in line
        assert "could not read its audio" not in err and "skipped" not in err


# ------------------------------------------------------------ later stages


@pytest.fixture(scope="module")
def raw(tmp_path_factory, short_episode):
    """A downloaded short Piper episode (the input of segment)."""
    root = tmp_path_factory.mktemp("faults")
    wav, _ = short_episode
    (root / "sources.yaml").write_text(f"sources:\n  - source: {wav}\n")
    # (the short episode keeps 2 of its 4 clips, and 1 without the partial-sentence drop off: too few to build)
    params = params_file(root / "params.yaml", {"segment": {"speaker": False, "dnsmos": False},
                                                "build_dataset": {"drop_partial_sentences": False}})
    assert download.main(["--params", str(params), "--sources", str(root / "sources.yaml"),
                          "--out", str(root / "raw")]) == 0
    return root, params


def _segment(root: Path, params: Path, out: Path) -> int:
    return segment.main(["--params", str(params), "--raw", str(root / "raw"), "--out", str(out),
                         "--metrics", str(out.parent / "segment.json")])


def test_a_full_disk_in_segment_is_one_line_naming_the_path(raw, tmp_path, capsys):
    root, params = raw
    with _mounted(tmp_path / "disk", "300k") as disk:
        assert _segment(root, params, disk / "clips") == 1
        line = _error_line(capsys.readouterr().err, "segment")
        assert "No space left on device" in line and str(disk) in line


def test_a_read_only_output_folder_is_one_line_naming_the_path(raw, tmp_path, capsys):
    root, params = raw
    with _mounted(tmp_path / "ro", "1m", read_only=True) as folder:
        assert _segment(root, params, folder / "clips") == 1
        line = _error_line(capsys.readouterr().err, "segment")
        assert "Read-only file system" in line and str(folder) in line and "read-only file system: make it" in line


def test_leftovers_of_an_interrupted_run_are_swept_at_start(raw, tmp_path):
    root, params = raw
    out = tmp_path / "data" / "clips"
    out.parent.mkdir(parents=True)
    (out.parent / ".tmp-clips-k1lled").mkdir()
    (out.parent / ".tmp-clips-k1lled" / "c1.wav").write_bytes(b"x" * 1000)
    (out.parent / ".tmp-segment-half.json").write_text("{")
    (out.parent / "unrelated.txt").write_text("mine")
    assert _segment(root, params, out) == 0
    assert not list(out.parent.glob(".tmp-*")) and (out.parent / "unrelated.txt").exists()
    # download sweeps the staging folder a killed run left inside its output.
    (root / "raw" / ".tmp-staging-k1lled").mkdir()
    (root / "raw" / ".tmp-staging-k1lled" / "url-x.wav").write_bytes(b"x")
    assert download.main(["--params", str(params), "--sources", str(root / "sources.yaml"),
                          "--out", str(root / "raw")]) == 0
    assert not list((root / "raw").glob(".tmp-*"))


def test_params_fall_back_nowhere_a_missing_key_stops_the_stage(raw, tmp_path, capsys):
    import yaml

    root, params = raw
    data = yaml.safe_load(params.read_text())
    del data["segment"]["min_pause_ms"]
    broken = tmp_path / "params.yaml"
    broken.write_text(yaml.safe_dump(data))
    assert _segment(root, broken, tmp_path / "clips") == 1
    assert "segment.min_pause_ms is missing; add 'min_pause_ms: 450' under 'segment:'" in _error_line(
        capsys.readouterr().err, "segment")
    assert not (tmp_path / "clips").exists()


def test_a_relative_model_folder_that_does_not_exist_is_not_taken_for_a_hub_name(raw, tmp_path, capsys,
                                                                              monkeypatch):
    root, params = raw
    assert _segment(root, params, root / "clips") == 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    p = params_file(tmp_path / "params.yaml", {"transcribe": {"model": "models/whisper-small"}})
    code = transcribe.main(["--params", str(p), "--clips", str(root / "clips"), "--out", str(tmp_path / "tr"),
                            "--metrics", str(tmp_path / "tr.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert "ASR model 'models/whisper-small': no such directory" in _error_line(err, "transcribe")


def test_zero_evaluation_utterances_is_a_params_error_not_an_empty_file(tmp_path, write_params, capsys):
    from stages import evaluate

    code = evaluate.main(["--params", str(write_params({"evaluate": {"max_utterances": 0}})), "--dataset",
                          str(tmp_path / "dataset"), "--synth-dir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "evaluate.max_utterances: 0 is out of range; expected >= 1" in _error_line(err, "evaluate")


def test_a_read_only_dataset_folder_in_build_dataset(raw, tmp_path, capsys):
    root, params = raw
    if not (root / "clips").exists():
        assert _segment(root, params, root / "clips") == 0
    if not (root / "tr").exists():
        assert transcribe.main(["--params", str(params), "--clips", str(root / "clips"), "--out", str(root / "tr"),
                                "--metrics", str(root / "tr.json")]) == 0
    with _mounted(tmp_path / "ro", "1m", read_only=True) as folder:
        code = build_dataset.main(["--params", str(params), "--clips", str(root / "clips"), "--transcripts",
                                   str(root / "tr"), "--out", str(folder / "dataset"), "--metrics",
                                   str(tmp_path / "dataset.json")])
        assert code == 1
        assert "Read-only file system" in _error_line(capsys.readouterr().err, "build_dataset")
