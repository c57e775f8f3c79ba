"""Plots without a network: `dvc plots show` on the repository's own plots, opened in headless Chromium with
every request that leaves the page refused, draws each plot; and the static curves are real pictures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.pace import patient
from voicemill import plots


@pytest.fixture(scope="module")
def dvc_page(tmp_path_factory):
    """`dvc plots show` run as a user runs it (the template named in .dvc/config), on a copy of the repository's
    plot definitions and the metrics they read."""
    template = REPO / plots.TEMPLATE
    assert template.is_file(), "scripts/setup.sh writes .dvc/offline_plots.html (python -m voicemill.plots template)"
    work = tmp_path_factory.mktemp("plots") / "repo"
    for name in ("dvc.yaml", ".dvc/config", ".dvc/offline_plots.html", ".dvc/plots", "metrics"):
        src, dst = REPO / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    r = subprocess.run(["dvc", "plots", "show", "-o", "page"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=patient(30, 300))
    assert r.returncode == 0, r.stderr
    page = work / "page" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr.net" not in html and "vegaEmbed" in html  # the libraries are in the page itself
    return page, html.count("vegaEmbed('#")


def test_dvc_plots_draw_every_plot_with_the_network_blocked(dvc_page, tmp_path):
    from playwright.sync_api import sync_playwright

    page_path, expected = dvc_page
    assert expected >= 10  # the training curves, the listening curves, the dataset and evaluation plots
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is needed for this test: scripts/setup.sh --test installs it"
    limit_ms = patient(20, 60) * 1000
    refused = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, timeout=limit_ms, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync", "--disable-background-networking"])
        page = browser.new_page()
        page.set_default_timeout(limit_ms)

        def only_the_file(route):
            if route.request.url.startswith("file://"):
                return route.continue_()
            refused.append(route.request.url)
            return route.abort()

        page.route("**/*", only_the_file)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_function(f"document.querySelectorAll('div[id] > svg, div[id] svg.marks').length >= {expected}")
        marks = page.evaluate("""() => Array.from(document.querySelectorAll('div[id]'))
            .filter(d => d.querySelector('svg'))
            .map(d => ({id: d.id, marks: d.querySelectorAll('svg g[class*="mark-"] path, svg g[class*="mark-"] line').length}))""")
        page.screenshot(path=str(tmp_path / "plots.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert len(marks) == expected and all(m["marks"] > 0 for m in marks), marks
    assert not [u for u in refused if "jsdelivr" in u or "vega" in u], refused  # nothing asked for the CDN


def test_static_curves_are_svg_and_png_of_the_metrics(tmp_path):
    live = tmp_path / "live" / "plots" / "metrics"
    (live / "train").mkdir(parents=True)
    (live / "eval").mkdir()
    (live / "train" / "loss_mel.tsv").write_text("timestamp\tstep\tloss_mel\n0\t1\t40.5\n0\t2\t38.0\n0\t3\t35.2\n")
    (live / "eval" / "composite.tsv").write_text("timestamp\tstep\tcomposite\n0\t10\t0.80\n0\t20\t0.85\n")
    scores = tmp_path / "scores.csv"
    scores.write_text("clip_id,wer,wer_gt,distillmos,distillmos_gt\na,0.1,0.0,4.0,4.2\nb,0.0,0.05,3.9,4.1\n")
    written = plots.render_curves(plots.curve_specs(tmp_path / "live", scores), tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == sorted(f"{n}.{ext}" for n in ("train_loss_mel", "eval_composite", "eval_wer_per_utterance",
                                                   "eval_distillmos_per_utterance") for ext in ("svg", "png"))
    svg = (tmp_path / "out" / "train_loss_mel.svg").read_text()
    assert "<svg" in svg and "mark-line" in svg and "loss_mel per step" in svg
    assert (tmp_path / "out" / "eval_composite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A metric no longer logged loses its picture at the next render.
    (live / "eval" / "composite.tsv").unlink()
    plots.render_curves(plots.curve_specs(tmp_path / "live", scores), tmp_path / "out")
    assert not (tmp_path / "out" / "eval_composite.svg").exists()


def test_the_training_page_plays_each_evaluation_and_shows_its_scores(tmp_path, piper_voice):
    """Two evaluations as the train stage keeps them (audio + scores.json): the page's players load their audio
    in Chromium and the scores it shows are the files'."""
    import json

    import numpy as np
    import soundfile as sf
    from playwright.sync_api import sync_playwright

    from voicemill import report

    root = tmp_path / "checkpoints" / "eval"
    texts = {"clip-a": "The kettle is on.", "clip-b": "The bread is nearly done."}
    for step, composite in ((10, 0.81), (20, 0.86)):
        d = root / f"step-{step:06d}"
        d.mkdir(parents=True)
        sentences = []
        for cid, text in texts.items():
            audio = np.concatenate([c.audio_float_array for c in piper_voice.synthesize(text)])
            sf.write(d / f"{cid}.wav", audio, 22050, subtype="PCM_16")
            sentences.append({"clip_id": cid, "heard": text, "wer": 0.0, "distillmos": 4.0 + step / 100,
                              "similarity": 0.9})
        (d / "scores.json").write_text(json.dumps({"scores": {"wer": 0.01, "distillmos": 4.1 + step / 100,
                                                              "similarity": 0.93, "composite": composite},
                                                   "sentences": sentences}))
    page_path = tmp_path / "reports" / "training.html"
    page_path.parent.mkdir()
    page_path.write_text(report.render_training(report.read_evaluations(root), page_path))
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is needed for this test: scripts/setup.sh --test installs it"
    limit_ms = patient(20, 60) * 1000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, timeout=limit_ms, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync", "--disable-background-networking"])
        page = browser.new_page()
        page.set_default_timeout(limit_ms)
        page.goto(page_path.as_uri())
        page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)")
        durations = page.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.duration)")
        shown = page.evaluate("""() => Array.from(document.querySelectorAll('#evaluations tr[data-step]')).map(r =>
            ({step: +r.dataset.step, composite: +r.querySelector('td[data-key=composite]').textContent,
              best: r.className === 'best'}))""")
        marks = page.evaluate("document.querySelectorAll('svg g[class*=\"mark-\"] path').length")
        browser.close()
    assert len(durations) == 4 and all(d > 0.5 for d in durations), durations
    assert shown == [{"step": 10, "composite": 0.81, "best": False}, {"step": 20, "composite": 0.86, "best": True}]
    assert marks > 0
