"""How long tests wait: sized from work timed on this machine, so that no test assumes how fast the CPU is.

A test that waits for something (a checkpoint on disk, a server gone idle, a
subprocess's exit) waits for that event itself; the limit on the wait only
turns a hang into a failure, so it sits far above the work waited on:
:func:`patient` gives ten times that work as timed here at the start, and
never less than the limit the test had when it was written (on an idle
machine). Where a duration is what a test checks (the queue and the deadline
of ``voicemill serve`` in tests/test_serve.py), it is set from the same kind
of measurement. ``python -m scripts.portability --busy`` runs tests beside a
CPU-bound process to show that a slow or busy machine only waits longer
(issue 31).
"""

from __future__ import annotations

import time

#: How many times the measured work a wait allows.
PATIENCE = 10.0

#: The limit on a wait whose work no test measures first: the demo's whole `dvc repro` (about 12 minutes on
#: 2 idle cores, one stage of it per wait) and its experiments. Far above any machine the suite finishes on;
#: only a hang ever reaches it.
HANG_S = 3 * 3600.0


def slowest(fn, runs: int = 2) -> float:
    """Seconds of the slowest of ``runs`` calls of ``fn()``: the pace now, the machine's load included."""
    worst = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        worst = max(worst, time.perf_counter() - t0)
    return worst


def patient(work_s: float, floor_s: float) -> float:
    """The limit on waiting for ``work_s`` of work (timed on this machine): ``PATIENCE`` times it, at least
    ``floor_s``."""
    return max(floor_s, PATIENCE * work_s)
