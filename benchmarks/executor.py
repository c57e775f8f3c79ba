"""Benchmark: segment + transcribe on one long source with the local process pool and with Ray.

Builds (once, cached) a long 48 kHz stereo FLAC from the demo episodes
repeated (as ``benchmarks/segment_speed.py`` does), takes it through the
download stage, then runs the segment and transcribe stages on it, as a user
would (``python -m stages.<stage>``, each timed from start to exit), once
per executor:

- ``local``: ``common.executor: local``, the process pool;
- ``ray``: ``common.executor: ray`` with ``ray.address: local``, a Ray
  cluster started inside each stage (its start-up is part of the time, as
  it is for a user; ``--address`` joins a running cluster instead).

Both runs use params.yaml's values except ``transcribe.verify_model``
(off: ``--verify`` keeps it), with scoring on in segment. Prints each stage's
time and speed (x real time), Ray's throughput against the local pool's and
the overhead (goal: at most 15 % on this machine), whether both wrote the
same bytes, and the per-core figures with what they project for 1,000 hours
on a cluster.

Usage: python -m benchmarks.executor [--hours 1] [--work DIR] [--address ADDR] [--verify] [--json FILE]
Exit:  0 when both runs finished and wrote the same bytes (1 otherwise); 2 when the overhead goal is missed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_OVERHEAD = 0.15


def digest(folder: Path) -> str:
    """One SHA-256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def params_for(path: Path, executor: str, address: str, verify: bool) -> Path:
    import yaml

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["common"]["executor"] = executor
    data["ray"]["address"] = address
    if not verify:
        data["transcribe"]["verify_model"] = ""
    path.write_text(yaml.safe_dump(data))
    return path


def stage(name: str, params: Path, args: list[str], log: Path) -> float:
    """Run one stage; its wall time in seconds."""
    cmd = [sys.executable, "-m", f"stages.{name}", "--params", str(params), *args]
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, TQDM_DISABLE="1")).returncode
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {log}:\n{log.read_text()[-3000:]}")
    return elapsed


def run(executor: str, raw: Path, out: Path, address: str, verify: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    params = params_for(out / "params.yaml", executor, address, verify)
    times = {
        "segment": stage("segment", params, ["--raw", str(raw), "--out", str(out / "clips"),
                                             "--metrics", str(out / "segment.json")], out / "segment.log"),
        "transcribe": stage("transcribe", params, ["--clips", str(out / "clips"), "--out",
                                                   str(out / "transcripts"), "--metrics",
                                                   str(out / "transcribe.json")], out / "transcribe.log"),
    }
    seg = json.loads((out / "segment.json").read_text())
    tr = json.loads((out / "transcribe.json").read_text())
    return {"executor": executor, "times_s": times, "clips": seg["clips"], "transcribed": tr["clips"],
            "digest": {"clips": digest(out / "clips"), "transcripts": digest(out / "transcripts")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="length of the source (default: %(default)s)")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "voicemill" / "bench"),
                   help="where the source is built and cached, and the runs write (default: %(default)s)")
    p.add_argument("--address", default="local", help="ray.address for the Ray run (default: %(default)s)")
    p.add_argument("--verify", action="store_true", help="keep transcribe.verify_model (a second ASR pass)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)

    from benchmarks.segment_speed import build_source

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"building the {args.hours:g} h 48 kHz stereo source in {work} (cached) ...", flush=True)
    source = build_source(work, args.hours)
    raw = work / f"raw_{args.hours:g}h"
    if not (raw / "manifest.parquet").exists():
        (work / "sources.yaml").write_text(f"sources:\n  - source: {source}\n")
        stage("download", params_for(work / "params.yaml", "local", "local", False),
              ["--sources", str(work / "sources.yaml"), "--out", str(raw)], work / "download.log")
    seconds = args.hours * 3600
    cores = os.cpu_count() or 1
    print(f"source: {source.name}, {seconds:.0f} s of audio, {cores} CPU core(s)", flush=True)

    runs = {}
    for executor in ("local", "ray"):
        out = work / f"run_{executor}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        print(f"{executor}: segment + transcribe ...", flush=True)
        runs[executor] = run(executor, raw, out, args.address, args.verify)

    print(f"\n{'stage':<12}{'local s':>9}{'x RT':>7}{'ray s':>9}{'x RT':>7}{'ray/local':>11}")
    totals = {e: sum(r["times_s"].values()) for e, r in runs.items()}
    for name in ("segment", "transcribe"):
        lo, ra = runs["local"]["times_s"][name], runs["ray"]["times_s"][name]
        print(f"{name:<12}{lo:9.1f}{seconds / lo:7.1f}{ra:9.1f}{seconds / ra:7.1f}{lo / ra:11.3f}")
    ratio = totals["local"] / totals["ray"]
    print(f"{'both':<12}{totals['local']:9.1f}{seconds / totals['local']:7.1f}{totals['ray']:9.1f}"
          f"{seconds / totals['ray']:7.1f}{ratio:11.3f}")
    same = runs["local"]["digest"] == runs["ray"]["digest"]
    overhead = 1 - ratio
    print(f"\nRay throughput / local pool throughput: {ratio:.3f} (overhead {overhead:.1%}; goal <= "
          f"{GOAL_OVERHEAD:.0%}); {runs['local']['clips']} clips, same bytes from both: {same}")

    # Per core, from the local run (every core busy), and what that projects for 1,000 hours.
    per_core = {name: seconds / runs["local"]["times_s"][name] / cores for name in ("segment", "transcribe")}
    print(f"\nper core (local run / {cores} cores): segment {per_core['segment']:.1f}x real time, "
          f"transcribe {per_core['transcribe']:.1f}x real time")
    hours = 1000.0
    both = 1 / (1 / per_core["segment"] + 1 / per_core["transcribe"])  # core-hours per audio hour, both stages
    print(f"1,000 h of audio needs {hours / both:,.0f} core-hours for segment + transcribe:")
    for n in (2, 16, 64, 256):
        print(f"  {n:4d} cores: {hours / both / n:8.1f} h (if the sources spread evenly)")
    if args.json:
        Path(args.json).write_text(json.dumps({"hours": args.hours, "cores": cores, "runs": runs,
                                               "ratio": ratio, "overhead": overhead, "same_bytes": same,
                                               "per_core_x_realtime": per_core}, indent=2))
    if not same:
        print("FAIL: the executors wrote different bytes")
        return 1
    print("PASS" if overhead <= GOAL_OVERHEAD else "BELOW GOAL")
    return 0 if overhead <= GOAL_OVERHEAD else 2


if __name__ == "__main__":
    sys.exit(main())
