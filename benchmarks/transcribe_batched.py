"""Benchmark: packed ("batched") transcription against one Whisper call per clip.

Transcribes the same clips twice in one process with the same model and beam:
once with ``batch_size`` 1 (each clip alone in its 30 s window) and once
packed (``--batch-size`` clips per window, see voicemill/asr.py
``transcribe_clips``). Prints both wall times, the speed ratio, and both WERs
against the ground truth, computed as the transcribe stage's
``truth.wer`` (per source, the truth sentences mostly inside clips against the
clip transcripts in time order, both normalised for scoring), and each
clip's own label against the truth words inside it (``truth.clip_labels``:
the share of exact labels, and words lost to or taken from a neighbour at
clip edges). Packed decoding includes its edge check (clips with a doubtful
edge decoded again alone), so the time and accuracy are those of the stage.

The goal: packed at least 1.5x faster at equal WER and clip-label accuracy
(exact share not worse than per-clip by more than ``--wer-tolerance``, no
more edge errors).

Clips: ``--clips DIR`` (a segment output with ``truth/<source_id>.json``
sidecars), or by default the demo corpus built here into a temporary folder
by the pipeline's own download and segment stages (with params.yaml).

Usage:  python -m benchmarks.transcribe_batched [--clips data/clips] [--model tiny.en]
            [--beam-size 5] [--batch-size 8] [--repeat 1] [--strict]
Exit:   0 when both runs finished (1 on any error; with --strict, 2 when the goal is missed)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from voicemill import asr, manifest, params, truth
from voicemill.audio import read_wav
from voicemill.errors import VoicemillError
from voicemill.scoring import to_16k

GOAL_SPEEDUP = 1.5


def build_demo_clips(work: Path, params_file: Path) -> Path:
    """The demo corpus through the pipeline's own download and segment stages; returns the clips folder."""
    from stages import download, segment

    (work / "sources.yaml").write_text("sources:\n  - source: demo\n")
    p = ["--params", str(params_file)]
    if download.main(p + ["--sources", str(work / "sources.yaml"), "--out", str(work / "raw")]) != 0:
        raise VoicemillError("the download stage failed on the demo (see above)")
    # --metrics: keep the repository's metrics/segment.json untouched
    argv = p + ["--raw", str(work / "raw"), "--out", str(work / "clips"), "--metrics", str(work / "segment.json")]
    if segment.main(argv) != 0:
        raise VoicemillError("the segment stage failed on the demo (see above)")
    return work / "clips"


def load_clips(clips_dir: Path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    clips = manifest.read(clips_dir / "manifest.parquet", "clips")
    clips = clips.sort_values(["source_id", "start_s"], kind="stable").reset_index(drop=True)
    audios = []
    for path in clips["path"]:
        samples, rate = read_wav(clips_dir / path)
        audios.append(to_16k(samples, rate))  # Whisper's rate
    return clips, audios


def truth_wer(clips: pd.DataFrame, texts: list[str], truths: dict, language: str) -> tuple[float, int, int]:
    c = truth.total_counts(truths, clips.assign(text=texts), language)
    errors, words = c["word_errors"], c["words"]
    if not words:
        raise VoicemillError("no ground-truth sentence lies inside the clips; is this the demo's segment output?")
    return errors / words, errors, words


def run(model, audios, language: str, decode: asr.DecodeOptions) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    results = asr.transcribe_clips(model, audios, language, decode)
    return time.perf_counter() - started, results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transcribe_batched", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", help="a segment output folder with truth/ sidecars (default: build the demo)")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("--model", help="ASR model (default: transcribe.model)")
    p.add_argument("--beam-size", type=int, help="beam size (default: transcribe.beam_size)")
    p.add_argument("--batch-size", type=int, help="clips per packed window (default: transcribe.batch_size)")
    p.add_argument("--cpu-threads", type=int, help="CTranslate2 CPU threads (default: transcribe.cpu_threads)")
    p.add_argument("--repeat", type=int, default=1, help="alternate the two runs this often; best time counts")
    p.add_argument("--wer-tolerance", type=float, default=0.005,
                   help="packed WER may exceed per-clip WER by this much and count as equal (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit 2 when the goal (1.5x at equal WER) is missed")
    args = p.parse_args(argv)

    try:
        common, opts = params.load(Path(args.params), "transcribe")
        model_name = args.model or opts.model
        beam = args.beam_size or opts.beam_size
        batch = args.batch_size or opts.batch_size
        threads = opts.cpu_threads if args.cpu_threads is None else args.cpu_threads
        if batch <= 1:
            raise VoicemillError(f"--batch-size must be above 1 to compare packing with one call per clip, got {batch}")
        with tempfile.TemporaryDirectory(prefix="voicemill-bench-") as work:
            if args.clips:
                clips_dir = Path(args.clips)
            else:
                print("building the demo clips with the download and segment stages ...", flush=True)
                clips_dir = build_demo_clips(Path(work), Path(args.params))
            truths = truth.load_truths(clips_dir)
            if not truths:
                raise VoicemillError(f"{clips_dir / truth.TRUTH_DIR}: no ground-truth sidecars; "
                                     "pass the demo's clips (segment copies them there)")
            clips, audios = load_clips(clips_dir)
            model = asr.load_model(model_name, opts.device, opts.compute_type, threads)
            language = common.language
            # One short decode first, so that neither timed run pays the first call's set-up.
            asr.transcribe_clips(model, audios[:1], language, asr.DecodeOptions(beam_size=beam, batch_size=1))
            single = asr.DecodeOptions(beam_size=beam, batch_size=1, seed=common.seed)
            packed = asr.DecodeOptions(beam_size=beam, batch_size=batch, seed=common.seed)
            times = {"per-clip": [], "packed": []}
            texts, edges = {}, []
            for _ in range(max(1, args.repeat)):
                for name, decode in (("per-clip", single), ("packed", packed)):
                    seconds, results = run(model, audios, language, decode)
                    texts[name] = [r["text"] for r in results]
                    edges = [r["edge_check"] for r in results] if name == "packed" else edges
                    times[name].append(seconds)
    except (VoicemillError, OSError, ValueError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1

    audio_s = sum(len(a) for a in audios) / asr.ASR_RATE
    windows = len(asr.plan_windows([len(a) / asr.ASR_RATE for a in audios], batch))
    best = {name: min(ts) for name, ts in times.items()}
    wers = {name: truth_wer(clips, texts[name], truths, language) for name in times}
    labels = {name: truth.clip_labels(truths, clips.assign(text=texts[name]), language) for name in times}
    ratio = best["per-clip"] / best["packed"]
    equal = wers["packed"][0] <= wers["per-clip"][0] + args.wer_tolerance
    labels_equal = (labels["packed"]["clip_label_exact_share"] >= labels["per-clip"]["clip_label_exact_share"]
                    - args.wer_tolerance
                    and labels["packed"]["clip_edge_word_errors"] <= labels["per-clip"]["clip_edge_word_errors"])
    met = ratio >= GOAL_SPEEDUP and equal and labels_equal

    print(f"\n{len(audios)} clips, {audio_s:.1f} s of audio, {len(truths)} source(s) with ground truth")
    print(f"model {model_name}, beam {beam}, device/compute {asr.pick_device(opts.device, opts.compute_type)}, "
          f"cpu_threads {threads or 'auto'}, best of {max(1, args.repeat)} run(s)")
    print(f"{'mode':<10} {'windows':>8} {'wall s':>8} {'x real time':>12} {'WER':>8} {'errors/words':>13} "
          f"{'exact clips':>12} {'edge errors':>12}")
    for name, calls in (("per-clip", len(audios)), ("packed", windows)):
        w, e, n = wers[name]
        lab = labels[name]
        print(f"{name:<10} {calls:>8} {best[name]:>8.2f} {audio_s / best[name]:>12.1f} {w:>8.2%} {e:>6}/{n:<6} "
              f"{lab['clip_label_exact_share']:>12.1%} {lab['clip_edge_word_errors']:>12}")
    print(f"packed clips with a doubtful edge, decoded alone: {sum(r != '' for r in edges)} "
          f"({sum(r == 'mended' for r in edges)} mended)")
    print(f"speed ratio (per-clip / packed): {ratio:.2f}x")
    print(f"WER packed {wers['packed'][0]:.2%} vs per-clip {wers['per-clip'][0]:.2%}: "
          f"{'equal or better' if equal else 'WORSE'} (tolerance {args.wer_tolerance:.1%})")
    print(f"clip labels packed {labels['packed']['clip_label_exact_share']:.1%} exact, "
          f"{labels['packed']['clip_edge_word_errors']} edge error(s) vs per-clip "
          f"{labels['per-clip']['clip_label_exact_share']:.1%}, {labels['per-clip']['clip_edge_word_errors']}: "
          f"{'equal or better' if labels_equal else 'WORSE'}")
    print(f"goal ({GOAL_SPEEDUP}x at equal WER and clip-label accuracy): {'met' if met else 'NOT met'}")
    print(json.dumps({"clips": len(audios), "audio_s": round(audio_s, 2), "model": model_name, "beam_size": beam,
                      "batch_size": batch, "seconds": {k: round(v, 3) for k, v in best.items()},
                      "speed_ratio": round(ratio, 3), "wer": {k: round(v[0], 4) for k, v in wers.items()},
                      "clip_label_exact_share": {k: v["clip_label_exact_share"] for k, v in labels.items()},
                      "clip_edge_word_errors": {k: v["clip_edge_word_errors"] for k, v in labels.items()}}))
    return 2 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
