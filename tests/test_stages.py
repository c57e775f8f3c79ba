"""Stage tests through main([...]): errors that name the item, and a small full chain."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from stages import build_dataset, download, evaluate, export, segment, train, transcribe
from tests.conftest import params_file

TINY = {
    # From scratch at the tiny size: every code path of training, in seconds (test_tts fine-tunes joe).
    "train": {"preset": "tiny", "init_from": "", "epochs": 5, "max_steps": 3, "batch_size": 2},
    "evaluate": {"max_utterances": 2},
    # The short episode keeps 2 of its 4 clips (2 unverified labels); the rest of a sentence whose other part
    # was one of them is kept too here, or 1 clip would be left: these tests are about the stages' mechanics.
    "build_dataset": {"min_val_clips": 2, "drop_partial_sentences": False},
}


def test_missing_input_names_the_file(tmp_path, write_params, capsys):
    code = segment.main(["--params", str(write_params({})), "--raw", str(tmp_path / "nope"), "--out",
                         str(tmp_path / "clips"), "--metrics", str(tmp_path / "segment.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "nope" / "manifest.parquet") in err
    assert "dvc repro download" in err


def test_unknown_params_key_names_the_key(tmp_path, write_params, capsys):
    params = write_params({"segment": {"vad_agressiveness": 2}})
    code = segment.main(["--params", str(params), "--raw", str(tmp_path), "--out", str(tmp_path / "clips"),
                         "--metrics", str(tmp_path / "segment.json")])
    assert code == 1 and "vad_agressiveness" in capsys.readouterr().err


def test_sources_error_names_the_entry(tmp_path, write_params, capsys):
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - source: gone.wav\n")
    code = download.main(["--params", str(write_params({})), "--sources", str(sources), "--out", str(tmp_path / "raw")])
    assert code == 1 and "line 2: 'gone.wav'" in capsys.readouterr().err


def test_all_sources_broken_fails(tmp_path, write_params, capsys):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - source: bad.wav\n")
    code = download.main(["--params", str(write_params({})), "--sources", str(sources), "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert code == 1 and "bad.wav" in err and "no usable source" in err


@pytest.fixture(scope="module")
def chain(tmp_path_factory, short_episode):
    """download -> segment -> transcribe -> build_dataset on a short Piper episode plus a corrupt file."""
    root = tmp_path_factory.mktemp("chain")
    wav, truth = short_episode
    shutil.copy(wav, root / "episode.wav")
    (root / "broken.flac").write_bytes(b"fLaC not really")
    (root / "sources.yaml").write_text("sources:\n  - source: episode.wav\n  - source: broken.flac\n")
    params = root / "params.yaml"
    params_file(params, TINY)
    p = ["--params", str(params)]
    assert download.main(p + ["--sources", str(root / "sources.yaml"), "--out", str(root / "raw")]) == 0
    assert segment.main(p + ["--raw", str(root / "raw"), "--out", str(root / "clips"), "--metrics",
                             str(root / "segment.json")]) == 0
    assert transcribe.main(p + ["--clips", str(root / "clips"), "--out", str(root / "transcripts"), "--metrics",
                                str(root / "transcribe.json")]) == 0
    assert build_dataset.main(p + ["--clips", str(root / "clips"), "--transcripts", str(root / "transcripts"),
                                   "--out", str(root / "dataset"), "--metrics", str(root / "dataset.json")]) == 0
    return root, p, truth


def test_download_skips_and_reports_the_corrupt_file(chain):
    root, _, _ = chain
    failures = json.loads((root / "raw" / "failures.json").read_text())
    assert len(failures) == 1 and failures[0]["origin"].endswith("broken.flac")
    sources = pd.read_parquet(root / "raw" / "manifest.parquet")
    assert len(sources) == 1 and sources.iloc[0]["kind"] == "file"


def test_segment_corrupt_clip_source_is_skipped(chain, write_params, tmp_path, capsys):
    root, _, _ = chain
    raw = tmp_path / "raw"
    shutil.copytree(root / "raw", raw)
    m = pd.read_parquet(raw / "manifest.parquet")
    extra = m.iloc[0].copy()
    extra["source_id"], extra["audio_path"] = "file-broken", "broken.wav"
    (raw / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    pd.concat([m, extra.to_frame().T]).to_parquet(raw / "manifest.parquet")
    assert segment.main(["--params", str(write_params({})), "--raw", str(raw), "--out", str(tmp_path / "clips"),
                         "--metrics", str(tmp_path / "segment.json")]) == 0
    assert "file-broken" in capsys.readouterr().err
    clips = pd.read_parquet(tmp_path / "clips" / "manifest.parquet")
    assert set(clips["source_id"]) == {m.iloc[0]["source_id"]}


def test_dataset_is_ljspeech_and_loads_in_coqui(chain):
    from TTS.tts.configs.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.datasets import load_tts_samples

    root, _, truth = chain
    ds = root / "dataset"
    lines = (ds / "metadata.csv").read_text().splitlines()
    assert lines and all(len(line.split("|")) == 3 for line in lines)
    assert any("nineteen eighty-seven" in line.split("|")[2] for line in lines)
    n_train = len((ds / "metadata_train.csv").read_text().splitlines())
    n_val = len((ds / "metadata_val.csv").read_text().splitlines())
    assert n_train + n_val == len(lines) and n_val >= 1
    config = BaseDatasetConfig(formatter="ljspeech", path=str(ds), meta_file_train="metadata_train.csv",
                               meta_file_val="metadata_val.csv")
    train_samples, val_samples = load_tts_samples(VitsConfig(datasets=[config]), eval_split=True)
    assert len(train_samples) == n_train and len(val_samples) == n_val
    assert all(Path(s["audio_file"]).exists() for s in train_samples)


@pytest.mark.machine
@pytest.mark.voice_chain
def test_train_evaluate_export(chain, measure):
    import onnxruntime as ort

    root, p, _ = chain
    assert train.main(p + ["--dataset", str(root / "dataset"), "--out", str(root / "tts"), "--live",
                           str(root / "live"), "--checkpoints", str(root / "checkpoints")]) == 0
    assert (root / "checkpoints" / "step-000003" / "state.pth").exists()
    assert (root / "tts" / "model.pth").exists() and (root / "tts" / "config.json").exists()
    live = json.loads((root / "live" / "metrics.json").read_text())
    assert live["steps"] == 3  # train.max_steps ends training before the 5 epochs
    assert evaluate.main(p + ["--voice", str(root / "tts"), "--dataset", str(root / "dataset"), "--metrics",
                              str(root / "eval.json"), "--scores", str(root / "scores.csv"), "--report",
                              str(root / "report"), "--html", str(root / "report.html"), "--live",
                              str(root / "live"), "--checkpoints", str(root / "checkpoints")]) == 0
    metrics = json.loads((root / "eval.json").read_text())
    assert metrics["n_utterances"] >= 1
    for group, key in (("intelligibility", "wer"), ("intelligibility", "wer_gt"), ("intelligibility", "cer"),
                       ("quality", "dnsmos_ovrl"), ("quality", "dnsmos_ovrl_gt"), ("quality", "distillmos"),
                       ("quality", "distillmos_gt"), ("speaker", "similarity"), ("speaker", "similarity_gt"),
                       ("speed", "rtf_torch"), ("validity", "failed")):
        assert metrics[group][key] is not None, (group, key)
    for backend in ("resemblyzer", "whisper"):
        assert {"value", "noise_floor", "vectors_synth", "vectors_real"} <= set(metrics["fad"][backend])
    assert metrics["clap"] == {"available": 0}
    assert (root / "report.html").exists()
    # beside the report: the training page (this run listened once, at its last step) and the curves as pictures
    training_page = (root / "training.html").read_text()
    assert "<th>step 3</th>" in training_page and "../checkpoints/eval/step-000003/" not in training_page
    assert "checkpoints/eval/step-000003/" in training_page
    assert {"train_loss_mel.svg", "train_loss_mel.png", "eval_wer_per_utterance.svg"} <= {
        f.name for f in (root / "plots").iterdir()}
    # and the cloning page: from scratch there is no base voice to compare with; the reconstruction of each
    # recording is there, scored against it (e2e: the demo's, from joe)
    cloning = metrics["cloning"]
    assert cloning["base"] == "none" and cloning["n_utterances"] == metrics["n_utterances"]
    assert cloning["moved"] is None and 0 <= cloning["reconstruction_stoi"] <= 1
    cloning_page = (root / "cloning.html").read_text()
    assert "trained from scratch" in cloning_page
    assert cloning_page.count("<td data-side='reconstruction'><audio") == metrics["n_utterances"]
    assert len(list((root / "report" / "reconstruction").glob("*.wav"))) == metrics["n_utterances"]
    assert measure("wer_gt", metrics["intelligibility"]["wer_gt"]) <= 0.25  # the real recordings are understood
    assert measure("dnsmos_ovrl_gt", metrics["quality"]["dnsmos_ovrl_gt"]) > 2.5
    assert measure("similarity_gt", metrics["speaker"]["similarity_gt"]) > measure("similarity",
                                                                                 metrics["speaker"]["similarity"])
    assert export.main(p + ["--voice", str(root / "tts"), "--onnx", str(root / "voice.onnx"), "--metrics",
                            str(root / "export.json")]) == 0
    voice = json.loads((root / "voice.onnx.json").read_text())
    assert voice["audio"]["sample_rate"] == 22050 and voice["num_symbols"] == 256 and voice["espeak"]["voice"] == "en-us"
    assert voice["phoneme_id_map"]["^"] == [1] and voice["inference"]["noise_w"] > 0
    exported = json.loads((root / "export.json").read_text())
    assert measure("export_max_abs_diff", exported["max_abs_diff"]) < 1e-3
    session = ort.InferenceSession(str(root / "voice.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "input_lengths", "scales"]


def test_report_opens_in_chromium_with_players_and_images(chain):
    from playwright.sync_api import sync_playwright

    root, _, _ = chain
    page_file = root / "report.html"
    assert page_file.exists(), "test_train_evaluate_export writes the report"
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is needed for this test: scripts/setup.sh --test installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page()
        page.goto(page_file.as_uri())
        assert page.locator("#headline tr").count() >= 5
        durations = page.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].map(a =>
            a.readyState >= 1 ? a.duration : new Promise(done => {
                a.addEventListener('loadedmetadata', () => done(a.duration));
                a.addEventListener('error', () => done(-1));
                a.load();
            })))""")
        images = page.evaluate("() => [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        page.screenshot(path=str(root / "report.png"), full_page=False)
        browser.close()
    n = json.loads((root / "eval.json").read_text())["n_utterances"]
    assert len(durations) == 2 * n and all(d > 0.3 for d in durations), durations
    assert len(images) == n and all(w > 100 for w in images), images


@pytest.mark.machine
@pytest.mark.voice_chain
def test_score_a_folder_of_wavs_with_clap_twice(chain, piper_voice, tmp_path, measure):
    """--synth-dir scores any system's WAVs (here the Piper voice itself), with a CLAP model; runs repeat exactly."""
    from tests.tiny_clap import build_tiny_clap
    from voicemill.audio import write_wav
    from voicemill.demo import synthesize
    from voicemill.tts.coqui import read_metadata

    root, _, _ = chain
    synth_dir = tmp_path / "piper"
    synth_dir.mkdir()
    for clip_id, _raw, text in read_metadata(root / "dataset" / "metadata_val.csv"):
        audio, rate = synthesize(piper_voice, text)
        write_wav(synth_dir / f"{clip_id}.wav", audio, rate)
    params = tmp_path / "params.yaml"
    clap = build_tiny_clap(tmp_path / "clap")
    params_file(params, {"evaluate": {"max_utterances": 2, "clap_model": str(clap),
                                                    "fad_backends": ["resemblyzer", "clap"]}})
    results = []
    for run in ("a", "b"):
        assert evaluate.main(["--params", str(params), "--dataset", str(root / "dataset"), "--synth-dir",
                              str(synth_dir), "--metrics", str(tmp_path / f"{run}.json"), "--scores",
                              str(tmp_path / f"{run}.csv"), "--html", str(tmp_path / f"{run}.html")]) == 0
        results.append((tmp_path / f"{run}.json").read_text())
    assert results[0] == results[1]
    metrics = json.loads(results[0])
    assert metrics["clap"]["available"] == 1 and -1 <= metrics["clap"]["score"] <= 1
    assert "value" in metrics["fad"]["clap"]
    assert "speed" not in metrics  # nothing was synthesized here
    assert measure("wer", metrics["intelligibility"]["wer"]) <= 0.25  # the Piper voice is understood
    assert measure("distillmos", metrics["quality"]["distillmos"]) > 3.5
    assert measure("similarity", metrics["speaker"]["similarity"]) > 0.8  # the demo is the Piper voice


def test_dataset_parquet_goes_back_in_as_a_source_with_its_transcripts(chain, tmp_path, write_params):
    """build_dataset's Hugging Face-layout Parquet is a valid Parquet source; its texts skip ASR."""
    import pyarrow.parquet as pq

    root, _, _ = chain
    table = pq.read_table(root / "dataset" / "dataset.parquet")
    assert table.column_names == ["audio", "text", "raw_text", "speaker_id", "split"]
    n = min(2, table.num_rows)
    pq.write_table(table.slice(0, n), tmp_path / "subset.parquet")
    (tmp_path / "sources.yaml").write_text("sources:\n  - source: subset.parquet\n")
    params = write_params({"segment": {"min_duration_s": 0.5}})
    p = ["--params", str(params)]
    assert download.main(p + ["--sources", str(tmp_path / "sources.yaml"), "--out", str(tmp_path / "raw")]) == 0
    assert segment.main(p + ["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "clips"), "--metrics",
                             str(tmp_path / "segment.json")]) == 0
    assert transcribe.main(p + ["--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "tr"), "--metrics",
                                str(tmp_path / "transcribe.json")]) == 0
    tr = pd.read_parquet(tmp_path / "tr" / "manifest.parquet")
    kept = tr[tr["text_source"] == "dataset"]
    assert len(kept) >= 1
    assert set(kept["text"]) <= set(table.column("text").to_pylist()[:n])
