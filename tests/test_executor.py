"""The data stages on a two-node Ray cluster (two raylets on loopback) against the local process pool.

Segment and transcribe must write the same bytes whichever executor ran, and
a worker killed mid-run must cost no item (Ray starts another and tries the
item again).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, params_file
from tests.pace import HANG_S, patient

ray = pytest.importorskip("ray")

#: Scoring on (DNSMOS and speaker embeddings: the clip bytes and every score compared), one ASR model.
PARAMS = {"transcribe": {"verify_model": ""}}
#: How long a started node may take to join. Ray's default (30 s) guesses at the machine's speed; this only
#: has to catch a node that never joins.
JOIN_S = 600.0


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each on this machine."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes(JOIN_S)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Three demo recordings (two episodes and the reference), through the download stage."""
    from stages import download
    from voicemill.demo import EPISODES, generate_demo

    root = tmp_path_factory.mktemp("executor")
    generate_demo(root / "demo", episodes=EPISODES[:2])
    names = sorted(p.name for p in (root / "demo").glob("*.wav"))
    assert len(names) == 3
    (root / "sources.yaml").write_text("sources:\n" + "".join(f"  - source: demo/{n}\n" for n in names))
    params = params_file(root / "params.yaml", PARAMS)
    assert download.main(["--params", str(params), "--sources", str(root / "sources.yaml"), "--out",
                          str(root / "raw")]) == 0
    return root / "raw"


def run_stages(raw: Path, out: Path, executor: str, address: str = "", kill: bool = False,
               limits: dict[str, float] | None = None) -> tuple[str, list[str], dict[str, float]]:
    """segment then transcribe in subprocesses (each its own Ray driver); their logs, what was killed, and the
    seconds each stage took. ``limits``: the seconds after which a stage counts as hung (default ``HANG_S``)."""
    sections = {**PARAMS, "common": {"executor": executor}}
    if address:
        sections["ray"] = {"address": address}
    out.mkdir(parents=True)
    params = params_file(out / "params.yaml", sections)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    logs, killed, seconds = [], [], {}
    for stage, args in (("segment", ["--raw", str(raw), "--out", str(out / "clips")]),
                        ("transcribe", ["--clips", str(out / "clips"), "--out", str(out / "transcripts")])):
        cmd = [sys.executable, "-m", f"stages.{stage}", "--params", str(params), *args,
               "--metrics", str(out / f"{stage}.json")]
        began = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watcher = None
        if kill:
            watcher = threading.Thread(target=kill_first_worker, args=(proc, killed), daemon=True)
            watcher.start()
        try:
            log = proc.communicate(timeout=(limits or {}).get(stage, HANG_S))[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        seconds[stage] = time.monotonic() - began
        if watcher:
            watcher.join()
        assert proc.returncode == 0, f"{stage} ({executor}) failed:\n{log[-4000:]}"
        logs.append(log)
    return "\n".join(logs), killed, seconds


#: Ray titles its worker processes by what they run: a segment task, or an ASR actor.
WORKER_TITLES = ("ray::segment_job", "ray::_Holder")


def kill_first_worker(proc: subprocess.Popen, killed: list[str]) -> None:
    """SIGKILL the first Ray worker process running a segment task or an ASR actor (once per stage), well into
    its item: once it has spent a CPU-second more on it (a wall-clock second is less work on a busy machine)."""
    import psutil

    while proc.poll() is None:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(p.info["cmdline"] or []).strip()
            if cmdline.startswith(WORKER_TITLES):
                try:
                    start = sum(p.cpu_times()[:2])  # user + system
                    while proc.poll() is None and sum(p.cpu_times()[:2]) - start < 1.0:
                        time.sleep(0.05)
                    if proc.poll() is not None:
                        return  # the stage ended first: nothing killed, and the test says so
                    os.kill(p.info["pid"], signal.SIGKILL)
                    killed.append(cmdline)
                    return
                except (ProcessLookupError, psutil.NoSuchProcess):
                    continue
        time.sleep(0.05)


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path: its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_run(raw, tmp_path_factory):
    """The local pool's outputs, and the seconds each stage took: Ray's runs of the same work get ten times that."""
    out = tmp_path_factory.mktemp("local") / "run"
    _, _, seconds = run_stages(raw, out, "local")
    return out, {stage: patient(s, 600) for stage, s in seconds.items()}


@pytest.mark.slow
def test_two_nodes_write_the_same_bytes_as_the_local_pool(raw, local_run, cluster, tmp_path):
    local, limits = local_run
    out = tmp_path / "ray"
    log, _, _ = run_stages(raw, out, "ray", cluster.address, limits=limits)
    assert "Ray cluster " + cluster.address in log and "2 node(s)" in log
    for folder in ("clips", "transcripts"):
        assert digest(out / folder) == digest(local / folder), folder
    clips = digest(out / "clips")
    assert sum(name.startswith("wavs/") for name in clips) > 20
    for stage in ("segment", "transcribe"):
        assert json.loads((out / f"{stage}.json").read_text()) == json.loads(
            (local / f"{stage}.json").read_text())


@pytest.mark.slow
def test_a_killed_worker_costs_no_item(raw, local_run, cluster, tmp_path):
    local, limits = local_run
    out = tmp_path / "ray"
    log, killed, _ = run_stages(raw, out, "ray", cluster.address, kill=True, limits=limits)
    assert len(killed) == 2, f"expected one worker killed per stage, got {killed}\n{log[-3000:]}"
    assert any("segment_job" in k for k in killed) and any("_Holder" in k for k in killed), killed
    assert "skipped" not in log, log[-3000:]
    for folder in ("clips", "transcripts"):
        assert digest(out / folder) == digest(local / folder), folder


@pytest.mark.slow
def test_a_node_that_dies_costs_no_item(local_run, tmp_path):
    """A node leaves mid-transcribe: its ASR worker restarts on the other node (once that one's worker is
    out of work and let go) and the units it held are decoded there."""
    import psutil
    from ray.cluster_utils import Cluster

    local, limits = local_run
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = c.add_node(num_cpus=1)
    c.wait_for_nodes(JOIN_S)
    try:
        params = params_file(tmp_path / "params.yaml", {**PARAMS, "common": {"executor": "ray"},
                                                        "ray": {"address": c.address}})
        cmd = [sys.executable, "-m", "stages.transcribe", "--params", str(params), "--clips",
               str(local / "clips"), "--out", str(tmp_path / "transcripts"), "--metrics",
               str(tmp_path / "transcribe.json")]
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + limits["transcribe"]
        while not any(" ".join(p.info["cmdline"] or []).startswith("ray::_Holder.call")
                      for p in psutil.process_iter(["cmdline"])):
            assert proc.poll() is None, f"transcribe ended before an ASR worker was seen:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, f"no ASR worker after {limits['transcribe']:.0f} s"
            time.sleep(0.05)
        c.remove_node(node)
        try:
            log = proc.communicate(timeout=limits["transcribe"])[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, log[-4000:]
        assert "skipped" not in log, log[-3000:]
        assert digest(tmp_path / "transcripts") == digest(local / "transcripts")
    finally:
        c.shutdown()


def test_an_item_that_raises_costs_only_itself(cluster):
    """Both executors: the bad item's error names what went wrong; the others' values come back in order."""
    from voicemill import executor, params

    items = ["[1]", "{not json", "[2, 3]"]
    ray_ex = executor.Ray(params.RayParams(address=cluster.address, max_retries=0))
    try:
        for ex in (executor.Local(2), ray_ex):
            out = ex.map(json.loads, items, desc="parse", unit="item")
            assert [v for v, _ in out] == [[1], None, [2, 3]], ex.name
            assert out[0][1] is None and out[2][1] is None
            assert "JSONDecodeError" in out[1][1], out[1][1]
    finally:
        ray_ex.close()
