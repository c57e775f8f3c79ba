"""Run the machine-sensitive tests under other machines' code paths, and print how far their values move.

CI and users run on whatever x86-64 CPU they have. CTranslate2 (Whisper),
PyTorch (speaker encoder, Distill-MOS, training), NumPy and ONNX Runtime
(Piper, DNSMOS) each pick kernels by instruction set (SSE, AVX2, AVX-512,
VNNI), so ASR text, MOS and similarities differ a little from machine to
machine. This script reproduces other machines on this one:

    native   this CPU's own kernels (what `make test` runs)
    avx2     an AVX2 machine without AVX-512: CT2_FORCE_CPU_ISA=AVX2,
             ATEN_CPU_CAPABILITY=avx2, NumPy without its X86_V4 kernels
    generic  the most portable paths: CT2_FORCE_CPU_ISA=GENERIC,
             ATEN_CPU_CAPABILITY=default, NumPy without X86_V3/X86_V4

ONNX Runtime has no switch to force another instruction set, so the avx2 and
generic variations also put a seeded TPDF dither at -90 dBFS (about one
16-bit step) on every sentence the Piper voice synthesizes
(VOICEMILL_SYNTH_DITHER_DBFS, see voicemill/demo.py): the size of the
differences another CPU's kernels make in Piper's output.

Each variation runs `pytest -m machine` (tests marked `machine` in
tests/*.py; `-m` picks others) with VOICEMILL_VARIATION set, which also runs
the demo's data stages against their goals (tests/test_portability.py). The
values the tests record with the `measure` fixture are printed side by side
with their spread. Exits 1 when any test fails in any variation.

`--busy` keeps CPU-bound processes running beside the tests, as on a CI
runner that shares its cores: no test may assume how fast the CPU is
(tests/pace.py sizes their waits from work timed on the machine). The
processes are stopped when the run ends, fails or is interrupted, and stop
themselves if this script is killed.

Usage:
    python -m scripts.portability                      # generic and avx2
    python -m scripts.portability --variations native generic avx2
    python -m scripts.portability --variations generic -k scoring
    python -m scripts.portability --variations native --busy -m "not slow"   # the suite on a busy machine
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Environment per variation, and the CPU flag it needs (forcing an instruction set a CPU lacks crashes).
VARIATIONS: dict[str, tuple[dict[str, str], str]] = {
    "native": ({}, ""),
    "avx2": ({"CT2_FORCE_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
              "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
              "VOICEMILL_SYNTH_DITHER_DBFS": "-90", "VOICEMILL_SYNTH_DITHER_SEED": "1"}, "avx2"),
    "generic": ({"CT2_FORCE_CPU_ISA": "GENERIC", "ATEN_CPU_CAPABILITY": "default",
                 "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
                 "VOICEMILL_SYNTH_DITHER_DBFS": "-90", "VOICEMILL_SYNTH_DITHER_SEED": "2"}, ""),
}
#: Set to the variation's name while its tests run (tests/test_portability.py reads it).
VARIATION_ENV = "VOICEMILL_VARIATION"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def variation_env(name: str) -> dict[str, str]:
    """The process environment for one variation (this one's own variables replaced)."""
    env = {k: v for k, v in os.environ.items() if not any(k in e for e, _ in VARIATIONS.values())}
    env.update(VARIATIONS[name][0])
    env[VARIATION_ENV] = name
    return env


#: A CPU-bound loop that ends once its parent (this script) is gone, however that ended. Ctrl-C reaches it
#: too: it leaves stopping to its parent, with no traceback.
SPIN = ("import os, signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nparent = int(sys.argv[1])\n"
        "while os.getppid() == parent:\n    sum(range(10**6))\n")


@contextlib.contextmanager
def busy(processes: int):
    """``processes`` CPU-bound processes running for the ``with`` block, stopped however it ends."""
    if processes < 1:
        yield []
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)  # a plain kill runs the ``finally`` below too
    spinners = []
    try:
        for _ in range(processes):
            spinners.append(subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())]))
        print(f"portability: busy: {processes} CPU-bound process(es) beside the tests "
              f"(pid {', '.join(str(p.pid) for p in spinners)})", flush=True)
        yield spinners
    finally:
        signal.signal(signal.SIGTERM, previous)
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)


def run_variation(name: str, junit: Path, extra: list[str], marker: str = "machine") -> tuple[int, float]:
    cmd = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", "-o", "junit_family=legacy", *extra]
    print(f"\n=== {name}: {' '.join(f'{k}={v}' for k, v in VARIATIONS[name][0].items()) or '(this CPU)'}",
          flush=True)
    start = time.monotonic()
    code = subprocess.run(cmd, cwd=REPO, env=variation_env(name)).returncode
    return code, time.monotonic() - start


def read_junit(path: Path) -> tuple[dict[tuple[str, str], float], dict[str, str]]:
    """(test, value name) -> value, and test -> outcome, from one run's JUnit XML."""
    values, outcomes = {}, {}
    if not path.exists():
        return values, outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '').removeprefix('tests.')}::{case.get('name')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
        outcomes[test] = outcome
        for prop in case.iter("property"):
            try:
                values[(test, prop.get("name"))] = float(prop.get("value"))
            except (TypeError, ValueError):
                pass
    return values, outcomes


def report(names: list[str], results: dict[str, tuple[dict, dict]]) -> list[str]:
    """Print the values side by side; return the tests that did not pass somewhere."""
    keys = sorted({k for values, _ in results.values() for k in values})
    width = max([len(f"{t} {v}") for t, v in keys] + [20])
    print("\n" + f"{'test value':<{width}}  " + "  ".join(f"{n:>9}" for n in names) + "     spread")
    for test, value in keys:
        row = [results[n][0].get((test, value)) for n in names]
        seen = [x for x in row if x is not None]
        spread = max(seen) - min(seen) if len(seen) > 1 else 0.0
        cells = "  ".join(f"{x:>9.4g}" if x is not None else f"{'-':>9}" for x in row)
        print(f"{test + ' ' + value:<{width}}  {cells}  {spread:>9.4g}")
    bad = sorted({f"{t} ({n}: {o})" for n in names for t, o in results[n][1].items() if o in ("FAILED", "ERROR")})
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variations", nargs="+", choices=list(VARIATIONS), default=["generic", "avx2"],
                   help="which machines to reproduce (default: %(default)s)")
    p.add_argument("-k", dest="keyword", default=None, help="only tests matching this pytest -k expression")
    p.add_argument("-m", dest="marker", default="machine",
                   help="the tests to run, as a pytest -m expression (default: %(default)s; \"\": every test)")
    p.add_argument("--busy", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="keep N CPU-bound processes (default 1) running beside the tests: a busy machine")
    args = p.parse_args(argv)
    flags = cpu_flags()
    names = []
    for name in args.variations:
        needs = VARIATIONS[name][1]
        if needs and needs not in flags:
            print(f"portability: skipping {name}: this CPU has no {needs}")
            continue
        names.append(name)
    extra = ["-k", args.keyword] if args.keyword else []
    results, failed_runs = {}, []
    with tempfile.TemporaryDirectory(prefix="voicemill-portability-") as tmp, busy(args.busy):
        for name in names:
            junit = Path(tmp) / f"{name}.xml"
            code, seconds = run_variation(name, junit, extra, args.marker)
            print(f"=== {name}: exit {code} in {seconds:.0f} s", flush=True)
            results[name] = read_junit(junit)
            if code not in (0, 5):  # 5: no test selected
                failed_runs.append(name)
    bad = report(names, results)
    if bad or failed_runs:
        print("\nportability: failed in " + ", ".join(failed_runs) + (":\n  " + "\n  ".join(bad) if bad else ""))
        return 1
    which = "machine-sensitive" if args.marker == "machine" and not args.keyword else "selected"
    print(f"\nportability: every {which} test passed in {', '.join(names)}" + (" on a busy machine" if args.busy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
