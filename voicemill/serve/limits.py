"""What a request may ask, and how many are served at once: shared by the HTTP and Wyoming front doors.

:class:`ServeOptions` declares every ``voicemill serve`` option once (type,
unit, range, default, doc); the command's flags and ``--help`` are derived
from it (:func:`voicemill.params.add_arguments`).

:class:`Admission` bounds the work: ``workers`` syntheses run at once on a
thread pool, at most ``queue`` more requests wait, and any request beyond
that is turned away at once (:class:`Busy`: HTTP 503 with ``Retry-After``).
A worker is held only while a sentence is synthesized, never while audio is
written to a client, so a slow reader cannot starve the others. A whole
response past its deadline (``timeout_s``) is a 504; a stream's deadline runs
per sentence, and a stream whose client has gone, or has taken nothing for
``timeout_s`` (``http.StalledClientGuard``), stops. Its place is given back
(``finally``), whatever ended it.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from voicemill.errors import VoicemillError
from voicemill.params import opt


#: What to do with emoji and other symbols that have no reading (``voicemill.serve.engine.speakable``).
SYMBOL_MODES = ("skip", "read", "refuse")


@dataclass(frozen=True)
class ServeOptions:
    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = opt(5100, "HTTP port (0: any free port, printed at start)", ge=0, le=65535)
    wyoming_port: int = opt(0, "also speak Home Assistant's Wyoming protocol on this TCP port (Piper's add-on "
                            "uses 10200); 0 = off", ge=1, le=65535, zero_off=True)
    workers: int = opt(0, "syntheses at once; 0 = one per CPU core", ge=0, le=256)
    threads: int = opt(1, "ONNX Runtime threads per synthesis (workers x threads should not exceed the cores)",
                       ge=1, le=64)
    queue: int = opt(32, "requests waiting for a worker; one more is answered 503 with Retry-After", ge=0)
    timeout_s: float = opt(60.0, "a whole response not done after this is 504; a stream stops when a sentence "
                           "(waiting included) or a write to a client that stopped reading takes longer", "s", gt=0)
    max_chars: int = opt(10000, "longest text one request may ask for (longer: 413)", "characters", ge=1,
                         le=1_000_000)
    first_chunk_chars: int = opt(60, "a stream's first sentence, when longer, is cut at a clause or phrase so the "
                                 "first audio comes sooner; 0 = never", "characters", ge=20, le=1000,
                                 zero_off=True)
    variant: str = opt("", "export variant to load (fp32, fp16, int8); empty = each voice's default")
    symbols: str = opt("skip", "emoji and other symbols with no reading: skip (named in the X-Voicemill-Skipped "
                       "header and the log), read (say their Unicode name: 'grinning face'), refuse (422)",
                       choices=SYMBOL_MODES)
    api_key: str = opt("", "require 'Authorization: Bearer KEY' on every route but /health and the page "
                       "(default: $VOICEMILL_API_KEY; prefer it: a flag shows in the process list); empty = "
                       "no key")
    cors_origin: str = opt("", "let web pages from this origin call the API from a browser (e.g. "
                           "https://example.org, or * for any); empty = only the server's own page")

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


class Busy(VoicemillError):
    """Every worker busy and the queue full; ``retry_after`` is a fair guess in whole seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Timeout(VoicemillError):
    """A request ran past ``timeout_s``."""


@dataclass
class Stats:
    """Counters for ``/metrics`` and ``/health`` (guarded by the admission lock)."""

    admitted: int = 0
    rejected_busy: int = 0
    timeouts: int = 0
    sentences: int = 0
    chars: int = 0
    synth_seconds: float = 0.0
    audio_seconds: float = 0.0
    by_status: dict = field(default_factory=dict)


class Ticket:
    """One admitted request: its deadline; :meth:`release` (idempotent) gives its place back."""

    def __init__(self, admission: "Admission", deadline: float):
        self._admission, self.deadline, self._released = admission, deadline, False

    def renew(self) -> None:
        """A fresh ``timeout_s`` from now (a stream's deadline runs per sentence)."""
        self.deadline = time.monotonic() + self._admission.timeout_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def release(self) -> None:
        with self._admission.lock:
            if not self._released:
                self._released = True
                self._admission.active -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Admission:
    """Bounded concurrency with a queue limit and a deadline (see the module docstring)."""

    def __init__(self, workers: int, queue: int, timeout_s: float):
        self.workers, self.capacity, self.timeout_s = workers, workers + queue, timeout_s
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="voicemill-synth")
        self.lock = threading.Lock()
        self.active = 0   # admitted, not yet released (waiting or running or streaming)
        self.running = 0  # sentences being synthesized now
        self.stats = Stats()
        self._service_s = 0.5  # running mean of one synthesis, for Retry-After

    def admit(self) -> Ticket:
        with self.lock:
            if self.active >= self.capacity:
                self.stats.rejected_busy += 1
                waiting = self.active - self.workers + 1
                retry = max(1, math.ceil(waiting * self._service_s / self.workers))
                raise Busy(f"busy: {self.active} requests in progress and queued (limit {self.capacity}); "
                           f"retry in {retry} s", retry)
            self.active += 1
            self.stats.admitted += 1
        return Ticket(self, time.monotonic() + self.timeout_s)

    def _timed(self, ticket: Ticket, fn, *args):
        if ticket.remaining() <= 0:
            raise Timeout(f"timed out after {self.timeout_s:g} s waiting for a worker (serve --timeout-s)")
        with self.lock:
            self.running += 1
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = time.perf_counter() - t0
            with self.lock:
                self.running -= 1
                self._service_s = 0.8 * self._service_s + 0.2 * elapsed
                self.stats.synth_seconds += elapsed

    async def run(self, ticket: Ticket, fn, *args):
        """``fn(*args)`` on a worker within the ticket's deadline; cancelled while queued, it never runs."""
        remaining = ticket.remaining()
        if remaining <= 0:
            self.count_timeout()
            raise Timeout(f"timed out after {self.timeout_s:g} s (serve --timeout-s)")
        future = self.pool.submit(self._timed, ticket, fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), remaining)
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()
            self.count_timeout()
            raise Timeout(f"timed out after {self.timeout_s:g} s (serve --timeout-s)") from None
        except asyncio.CancelledError:
            future.cancel()
            raise

    def count_timeout(self) -> None:
        with self.lock:
            self.stats.timeouts += 1

    def count_audio(self, sentences: int, chars: int, audio_seconds: float) -> None:
        with self.lock:
            self.stats.sentences += sentences
            self.stats.chars += chars
            self.stats.audio_seconds += audio_seconds

    def count_status(self, route: str, status: int) -> None:
        with self.lock:
            key = (route, status)
            self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            s = self.stats
            return {"workers": self.workers, "capacity": self.capacity, "active": self.active,
                    "running": self.running, "admitted": s.admitted, "rejected_busy": s.rejected_busy,
                    "timeouts": s.timeouts, "sentences": s.sentences, "chars": s.chars,
                    "synth_seconds": s.synth_seconds, "audio_seconds": s.audio_seconds,
                    "by_status": dict(s.by_status)}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
