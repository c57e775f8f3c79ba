"""Benchmark: the segment stage against a bare webrtcvad loop, on the same long source.

Builds (once, cached) a long 48 kHz stereo FLAC from the demo episodes
repeated, then measures, each in its own process so that peak memory is its
own:

- ``bare``:  ffmpeg decode to 16 kHz mono + a webrtcvad frame loop (decode and VAD only);
- ``stage``: :func:`voicemill.segment.segment_source` with DNSMOS and speaker
  scoring off (streaming decode, soxr to 16 kHz and to the clip rate, VAD, cut
  plan, loudness, measures, clips written);
- ``scored``: the same with DNSMOS and speaker embeddings on, over the first
  ``--scored-minutes`` of the source (scoring costs per clip, so the rate holds).

Prints times real time for each, the stage/bare speed ratio and the peak RSS of
the Python process (ffmpeg, a separate process decoding a stream, adds a few MB).
Goals: stage >= 200x real time on 2 cores, >= 0.5x the bare loop, peak memory
< 400 MB on the 2-hour source (PASS/BELOW GOAL and the exit code are these);
and, reported beside them, scored >= 60x real time at <= 600 MB (speed not
met on 2 cores: DNSMOS P.835 costs about 0.36 CPU-seconds per 9 s window, two
windows per clip; the speaker encoder runs in ONNX Runtime without torch).

Usage: python -m benchmarks.segment_speed [--hours 2] [--scored-minutes 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_source(work: Path, hours: float) -> Path:
    """A long 48 kHz stereo FLAC: the demo episodes, repeated (cached in ``work``)."""
    import soundfile as sf
    import soxr

    from voicemill import demo
    from voicemill.fsutil import atomic_path

    path = work / f"long_{hours:g}h_48k_stereo.flac"
    if path.exists():
        return path
    episodes = work / "episodes"
    if not (episodes / "reference.wav").exists():
        demo.generate_demo(episodes)
    base = []
    for ep in demo.EPISODES:
        x, rate = sf.read(episodes / f"{ep.name}.wav", dtype="float32")
        base.append(x)
    base48 = soxr.resample(np.concatenate(base), rate, 48000, quality="HQ")
    stereo = np.stack([base48, base48 * 0.9], axis=1)
    total = int(hours * 3600 * 48000)
    with atomic_path(path) as tmp, sf.SoundFile(tmp, "w", 48000, 2, subtype="PCM_16", format="FLAC") as f:
        written = 0
        while written < total:
            part = stereo[: total - written]
            f.write(part)
            written += len(part)
    return path


def bare(path: Path) -> dict:
    """ffmpeg to 16 kHz mono PCM, webrtcvad over 30 ms frames: nothing else."""
    import webrtcvad

    vad = webrtcvad.Vad(2)
    frame_bytes = 480 * 2
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "s16le", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    speech = frames = 0
    rest = b""
    while True:
        data = proc.stdout.read(1 << 20)
        if not data:
            break
        data = rest + data
        n = len(data) // frame_bytes
        for i in range(n):
            speech += vad.is_speech(data[i * frame_bytes : (i + 1) * frame_bytes], 16000)
        frames += n
        rest = data[n * frame_bytes :]
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg failed")
    return {"frames": frames, "speech_frames": speech}


def stage(path: Path, scored: bool, minutes: float) -> dict:
    from voicemill.segment import ClipOptions, CutPolicy, score_speakers, segment_source

    src = path
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if minutes:
            src = out / "excerpt.flac"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-t", str(minutes * 60), "-c:a",
                            "flac", str(src)], check=True)
        (out / "wavs").mkdir()
        if scored:
            from voicemill.segment import scorers

            scorers(True, True)  # model loading is not per-clip work
        start = time.perf_counter()
        res = segment_source("bench", src, out, 22050, CutPolicy(), ClipOptions(dnsmos=scored, speaker=scored))
        if scored:
            score_speakers([res], None)
        elapsed = time.perf_counter() - start
    return {"clips": len(res.rows), "duration_s": res.duration_s, "elapsed_s": elapsed}


def dnsmos_batches(sizes=(1, 4, 16), repeat: int = 3) -> dict[int, float]:
    """CPU-seconds per 9.01 s DNSMOS P.835 window (one thread) when ``size`` windows run as one batch."""
    import onnxruntime as ort
    import speechmos

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(Path(speechmos.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"),
                                   options, providers=["CPUExecutionProvider"])
    out = {}
    for size in sizes:
        x = (np.random.default_rng(0).standard_normal((size, 144160)) * 0.1).astype(np.float32)
        session.run(None, {"input_1": x})
        start = time.perf_counter()
        for _ in range(repeat):
            session.run(None, {"input_1": x})
        out[size] = (time.perf_counter() - start) / repeat / size
    return out


def peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(kind: str, path: str, minutes: float) -> None:
    start = time.perf_counter()
    if kind == "bare":
        out = bare(Path(path))
        out["elapsed_s"] = time.perf_counter() - start
    else:
        out = stage(Path(path), kind == "scored", minutes)
    out["peak_rss_mb"] = round(peak_rss_kb() / 1024, 1)
    print(json.dumps(out))


def measure(kind: str, path: Path, minutes: float = 0.0) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.segment_speed", "--child", kind, "--source", str(path),
                           "--scored-minutes", str(minutes)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=2.0, help="length of the long source (default: %(default)s)")
    p.add_argument("--scored-minutes", type=float, default=5.0,
                   help="minutes scored with DNSMOS + speaker embeddings (default: %(default)s)")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "voicemill" / "bench"),
                   help="where the long source is built and cached (default: %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.source, args.scored_minutes)
        return 0

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"building the {args.hours:g} h 48 kHz stereo source in {work} (cached) ...", flush=True)
    path = build_source(work, args.hours)
    seconds = args.hours * 3600
    print(f"source: {path.name}, {path.stat().st_size / 1e6:.0f} MB, {seconds:.0f} s, {os.cpu_count()} CPU core(s)")

    b = measure("bare", path)
    s = measure("stage", path)
    sc = measure("scored", path, args.scored_minutes)
    rt = lambda dur, el: dur / el  # noqa: E731
    print(f"bare webrtcvad loop (decode + VAD)   : {b['elapsed_s']:7.1f} s  {rt(seconds, b['elapsed_s']):6.0f}x real "
          f"time  peak RSS {b['peak_rss_mb']:.0f} MB")
    print(f"segment stage, no DNSMOS/speaker      : {s['elapsed_s']:7.1f} s  {rt(seconds, s['elapsed_s']):6.0f}x real "
          f"time  peak RSS {s['peak_rss_mb']:.0f} MB  {s['clips']} clips")
    print(f"segment stage with DNSMOS + speaker   : {sc['elapsed_s']:7.1f} s  "
          f"{rt(sc['duration_s'], sc['elapsed_s']):6.0f}x real time on the first {args.scored_minutes:g} min  "
          f"peak RSS {sc['peak_rss_mb']:.0f} MB  {sc['clips']} clips")
    per_window = dnsmos_batches()
    print("DNSMOS P.835, CPU-s per 9 s window on one thread, by batch size: "
          + ", ".join(f"{k}: {v:.3f}" for k, v in per_window.items()) + " (batching does not pay: the model is "
          "compute-bound)")
    ratio = b["elapsed_s"] / s["elapsed_s"]
    print(f"stage speed / bare loop speed         : {ratio:.2f}x  (goal >= 0.5x; stage goal >= 200x real time, "
          f"< 400 MB)")
    scored_rt = rt(sc["duration_s"], sc["elapsed_s"])
    print(f"scored: {scored_rt:.0f}x real time (goal >= 60x), peak RSS {sc['peak_rss_mb']:.0f} MB (goal <= 600): "
          f"{'met' if scored_rt >= 60 and sc['peak_rss_mb'] <= 600 else 'not met'}")
    ok = ratio >= 0.5 and rt(seconds, s["elapsed_s"]) >= 200 and s["peak_rss_mb"] < 400
    print("PASS" if ok else "BELOW GOAL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
