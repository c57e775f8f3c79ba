"""What must not depend on the machine, and the demo's data goals on other machines' code paths.

Bit-identical on every machine that decodes the same way, tested across
forced instruction sets (CTranslate2, PyTorch, NumPy): the demo audio, the
clip bytes segment cuts from the same source, and the dataset fingerprint
build_dataset computes from the same clips and transcripts. (ONNX Runtime,
which synthesizes the demo, picks its kernels by CPU with no switch to force
them; the README says what that changes.)

The demo's data goals under a variation run only inside
``scripts/portability.py``; the end-to-end test checks them on this CPU.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.portability import VARIATION_ENV, VARIATIONS
from tests.conftest import REPO, params_file
from tests.goals import check_demo_data

#: Runs in a fresh interpreter per instruction set: synthesize an episode, cut
#: a given source, build a dataset from given clips and transcripts.
PROBE = r"""
import hashlib, json, sys
from pathlib import Path
from stages import build_dataset, download, segment, transcribe
from voicemill import demo

work, params, inputs, full = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "full"
digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
p = ["--params", params]
voice = demo.load_voice(alignments=True)
episode = demo.Episode("probe", "Probe", demo.EPISODES[0].sentences[1:5])
demo.write_episode(voice, episode, work, seed=7)
out = {"episode": digest(work / "probe.wav")}
if full:  # the reference run also makes the inputs every run cuts and builds from
    (work / "sources.yaml").write_text("sources:\n  - source: probe.wav\n")
    assert download.main(p + ["--sources", str(work / "sources.yaml"), "--out", str(inputs / "raw")]) == 0
assert segment.main(p + ["--raw", str(inputs / "raw"), "--out", str(work / "clips"),
                         "--metrics", str(work / "segment.json")]) == 0
out["clips"] = {f.name: digest(f) for f in sorted((work / "clips" / "wavs").glob("*.wav"))}
if full:
    (inputs / "clips").symlink_to(work / "clips", target_is_directory=True)
    assert transcribe.main(p + ["--clips", str(inputs / "clips"), "--out", str(inputs / "transcripts"),
                                "--metrics", str(work / "transcribe.json")]) == 0
assert build_dataset.main(p + ["--clips", str(inputs / "clips"), "--transcripts", str(inputs / "transcripts"),
                               "--out", str(work / "dataset"), "--metrics", str(work / "dataset.json")]) == 0
out["fingerprint"] = json.loads((work / "dataset.json").read_text())["fingerprint"]
print("PROBE " + json.dumps(out))
"""


def _probe(tmp_path: Path, name: str, env: dict[str, str], params: Path, inputs: Path, full: bool) -> dict:
    work = tmp_path / name
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", PROBE, str(work), str(params), str(inputs), "full" if full else ""],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
    return json.loads(line.removeprefix("PROBE "))


@pytest.mark.slow
def test_audio_clips_and_fingerprint_do_not_depend_on_the_instruction_sets(tmp_path):
    # This machine's own kernels against the most portable ones; no dither (it changes the audio by design).
    variables = {k for env, _ in VARIATIONS.values() for k in env} | {VARIATION_ENV}
    native = {k: v for k, v in os.environ.items() if k not in variables}
    generic = dict(native, **{k: v for k, v in VARIATIONS["generic"][0].items() if "DITHER" not in k})
    params = tmp_path / "params.yaml"
    # Speaker scoring off: one voice, and the test is about bytes, not measures.
    params_file(params, {"segment": {"speaker": False}, "transcribe": {"cpu_threads": 2}})
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    a = _probe(tmp_path, "native", native, params, inputs, full=True)
    b = _probe(tmp_path, "generic", generic, params, inputs, full=False)
    assert a["clips"], "the probe episode gave no clip"
    assert a["episode"] == b["episode"]  # Piper (ONNX Runtime) is not switched by these variables
    assert a["clips"] == b["clips"]
    assert a["fingerprint"] == b["fingerprint"]


@pytest.mark.machine
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(VARIATION_ENV),
                    reason="runs under scripts/portability.py; test_e2e checks the same goals on this CPU")
def test_demo_data_stages_meet_the_goals(tmp_path, measure):
    from stages import build_dataset, download, segment, transcribe

    p = ["--params", str(REPO / "params.yaml")]
    (tmp_path / "sources.yaml").write_text("sources:\n  - source: demo\n")
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    assert download.main(p + ["--sources", str(tmp_path / "sources.yaml"), "--out", str(tmp_path / "raw")]) == 0
    assert segment.main(p + ["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "clips"), "--metrics",
                             str(metrics / "segment.json")]) == 0
    assert transcribe.main(p + ["--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "transcripts"),
                                "--metrics", str(metrics / "transcribe.json")]) == 0
    assert build_dataset.main(p + ["--clips", str(tmp_path / "clips"), "--transcripts",
                                   str(tmp_path / "transcripts"), "--out", str(tmp_path / "dataset"),
                                   "--metrics", str(metrics / "dataset.json")]) == 0
    check_demo_data(metrics, measure)
    dataset = json.loads((metrics / "dataset.json").read_text())
    print(f"{os.environ[VARIATION_ENV]}: dataset fingerprint {dataset['fingerprint']}, dropped {dataset['dropped']}")


@pytest.mark.parametrize("stop", ["exception", signal.SIGTERM, signal.SIGKILL])
def test_busy_processes_spin_beside_the_tests_and_never_outlive_the_run(stop):
    """`--busy`: an error or Ctrl-C in the run, a plain kill, or a SIGKILL (no cleanup runs) leaves none behind."""
    import psutil

    from scripts.portability import busy

    if stop == "exception":
        with pytest.raises(KeyboardInterrupt), busy(2) as spinners:
            assert len(spinners) == 2 and all(s.poll() is None for s in spinners)
            spinning, deadline = psutil.Process(spinners[0].pid), time.monotonic() + 60
            while sum(spinning.cpu_times()[:2]) < 0.2:  # CPU-bound: it takes what CPU it gets
                assert time.monotonic() < deadline, "a busy process used no CPU"
                time.sleep(0.05)
            raise KeyboardInterrupt
        assert all(s.poll() is not None for s in spinners)
        return
    code = "import time\nfrom scripts.portability import busy\nwith busy(1):\n    time.sleep(600)\n"
    run = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = run.stdout.readline()  # "portability: busy: 1 CPU-bound process(es) beside the tests (pid 123)"
    spinner = psutil.Process(int(line.rsplit("pid ", 1)[1].rstrip(")\n")))
    assert spinner.ppid() == run.pid and _alive(spinner)
    run.send_signal(stop)
    assert run.wait() == (143 if stop == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 60  # a limit only: it looks for its parent every few hundredths of a second
    while _alive(spinner):
        assert time.monotonic() < deadline, "a busy process outlived the run"
        time.sleep(0.05)


def _alive(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
