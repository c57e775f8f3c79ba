"""segment: cut every downloaded recording into utterance clips at pauses, and measure them.

Reads:  <raw>/manifest.parquet and the audio it lists (written by download);
        sources with role "reference" are not cut: they are the target voice
Writes: <out>/wavs/<clip_id>.wav        16-bit PCM mono at common.sample_rate_hz,
                                        loudness-normalised to segment.target_lufs
        <out>/manifest.parquet          one row per clip (the "clips" manifest):
            clip_id, source_id, path     ids; path relative to <out>
            start_s, end_s               the clip in the source, padding included (s)
            speech_start_s, speech_end_s where the VAD found speech to start and end (s)
            duration_s, sample_rate      of the written clip
            source_text                  the dataset's transcript when a Parquet row
                                         became exactly one clip, else ""
            loudness_lufs, peak          integrated loudness and sample peak, before
                                         normalisation
            clipped_share                share of samples at full scale (>= 0.999)
            peak_pileup                  share of half-cycle peaks within 10% of the
                                         clip's top: clipping at any level, after any
                                         codec (clean speech <= 0.005; NaN when short)
            silence_share                share of non-speech VAD frames in the clip
            snr_db                       SNR estimate from frame levels (capped at 60)
            bandwidth_hz                 highest frequency within 50 dB of the peak
            dnsmos_sig, dnsmos_bak,      DNSMOS P.835 of the normalised clip (1..5);
            dnsmos_ovrl                  NaN when segment.dnsmos is false
            speaker_similarity           cosine similarity (resemblyzer) to the target
                                         voice; NaN when segment.speaker is false
            speaker_reference            "reference" (the target came from reference
                                         sources) or "cluster" (the dominant speaker of
                                         the clip's source); "" when off
            speaker_consistency          lowest similarity of a 1.6 s window to the
                                         whole clip; low = two voices
            speaker_change               consistency below segment.speaker_change_below
        <out>/truth/<source_id>.json    ground-truth sidecars of the sources that have
                                        one (the demo), for later stages' checks
        <out>/subtitles/<source_id>.<lang>.vtt   human subtitles, as downloaded (cue
                                        times in the source; the source's start_s
                                        trim is recorded in <out>/sources.json)
        <out>/sources.json              per source: id, role, trim start_s, duration,
                                        speech share, clips, dropped regions
        metrics/segment.json            clips, hours, drops, failures, and a "truth"
                                        group when the sources carry ground truth:
                                        sentences_whole_share, boundary_error_median_ms,
                                        boundary_error_p95_ms, cuts_inside_words,
                                        speaker_purity, target_speech_kept_share
                                        (see voicemill/truth.py)
Params: common.sample_rate_hz, segment.* (see voicemill/segment.py), and
        build_dataset.min_speaker_similarity (which clips the truth check counts as kept);
        common.executor and ray.* say where the sources are cut (one task per source;
        the outputs are the same either way, see voicemill/executor.py)
Usage:  python -m stages.segment [--raw data/raw] [--out data/clips] [--metrics metrics/segment.json]
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pandas as pd

from voicemill import cli, executor, manifest, params, truth
from voicemill.fsutil import atomic_dir, write_json
from voicemill.segment import ClipOptions, CutPolicy, reference_embedding, score_speakers, segment_job

_LOGGER = logging.getLogger("stages.segment")


def _copy_side_files(src, raw_dir: Path, out_dir: Path) -> None:
    if getattr(src, "truth_path", ""):
        (out_dir / truth.TRUTH_DIR).mkdir(exist_ok=True)
        shutil.copy2(raw_dir / src.truth_path, out_dir / truth.TRUTH_DIR / f"{src.source_id}.json")
    for name in json.loads(getattr(src, "subtitles", "") or "[]"):
        (out_dir / "subtitles").mkdir(exist_ok=True)
        shutil.copy2(raw_dir / name, out_dir / "subtitles" / name)


def segment(raw_dir: Path, out_dir: Path, rate: int, opts: params.SegmentParams,
            min_speaker_similarity: float | None = None, ex: executor.Executor | None = None,
            segment_cpus: float = 1.0) -> dict:
    sources = manifest.read(raw_dir / "manifest.parquet", "sources")
    role = sources["role"] if "role" in sources else pd.Series("voice", index=sources.index)
    voices, references = sources[role != "reference"], sources[role == "reference"]
    if voices.empty:
        raise cli.StageError(f"{raw_dir}: every source has role 'reference'; add sources to cut into clips")
    policy = params.fill(CutPolicy, opts)
    clip_opts = params.fill(ClipOptions, opts)
    ex = ex or executor.Local(opts.workers)
    with atomic_dir(out_dir) as tmp:
        (tmp / "wavs").mkdir()
        jobs = [(src.source_id, raw_dir / src.audio_path, tmp, rate, policy, clip_opts,
                 str(getattr(src, "text", "") or "")) for src in voices.itertuples()]
        results, failed = [], []
        outcomes = ex.map(segment_job, jobs, desc="segment", unit="source", cpus=segment_cpus)
        for job, (value, error) in zip(jobs, outcomes):
            res, err = value if error is None else (None, f"{job[0]}: {error}")
            (results.append(res) if res else failed.append(err))
        for err in failed:
            _LOGGER.warning("skipped %s", err)

        reference = None
        if clip_opts.speaker and not references.empty:
            reference = reference_embedding([raw_dir / p for p in references["audio_path"]])
        if clip_opts.speaker:
            score_speakers(results, reference)

        rows = [row for res in results for row in res.rows]
        if not rows:
            raise cli.StageError(f"no clip was cut from the {len(voices)} source(s) in {raw_dir} "
                                 f"({len(failed)} unreadable); check the audio, or lower segment.vad_aggressiveness")
        clips = pd.DataFrame(rows)
        manifest.write(clips, tmp / "manifest.parquet", "clips")
        by_id = {r.source_id: r for r in results}
        summary_sources = []
        for src in sources.itertuples():
            _copy_side_files(src, raw_dir, tmp)
            res = by_id.get(src.source_id)
            summary_sources.append({
                "source_id": src.source_id, "role": str(getattr(src, "role", "voice") or "voice"),
                "start_s": None if pd.isna(getattr(src, "start_s", float("nan"))) else float(src.start_s),
                "duration_s": round(res.duration_s, 3) if res else None,
                "speech_share": round(res.speech_s / res.duration_s, 4) if res and res.duration_s else None,
                "clips": len(res.rows) if res else 0, "dropped_short": res.dropped if res else 0,
            })
        write_json(tmp / "sources.json", summary_sources)
        truths = truth.load_truths(tmp)

    summary = {
        "sources": len(results),
        "reference_sources": len(references),
        "failed": failed,
        "clips": len(rows),
        "hours": round(float(clips["duration_s"].sum()) / 3600, 4),
        "dropped_short": sum(r.dropped for r in results),
        "speaker_change_clips": int(clips["speaker_change"].sum()),
        "clipped_clips": int((clips["clipped_share"] > 0.001).sum()),
        "pileup_clips": int((clips["peak_pileup"] > 0.01).sum()),
        "dnsmos_ovrl_mean": round(float(clips["dnsmos_ovrl"].mean()), 4) if clips["dnsmos_ovrl"].notna().any()
        else None,
    }
    if truths:
        summary["truth"] = truth.compare(clips, truths, policy.max_duration_s, min_speaker_similarity)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "segment")
    p.add_argument("--raw", default="data/raw", help="download output folder (default: %(default)s)")
    p.add_argument("--out", default="data/clips", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/segment.json", help="metrics file (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        cli.sweep("segment", args.out, args.metrics)
        sections = params.load_all(Path(args.params))
        common, opts = sections["common"], sections["segment"]
        ex = executor.make(common, sections["ray"], opts.workers)
        try:
            s = segment(Path(args.raw), Path(args.out), common.sample_rate_hz, opts,
                        sections["build_dataset"].min_speaker_similarity, ex, sections["ray"].segment_cpus)
        finally:
            ex.close()
        write_json(Path(args.metrics), s)
        t = s.get("truth")
        if t:
            _LOGGER.info("segment vs ground truth: %.1f%% of sentences whole, boundary error median %.0f ms "
                         "(p95 %.0f), %d cut(s) inside words, speaker purity %s, target speech kept %s",
                         100 * t["sentences_whole_share"], t["boundary_error_median_ms"],
                         t["boundary_error_p95_ms"], t["cuts_inside_words_count"],
                         t.get("speaker_purity", "n/a"), t.get("target_speech_kept_share", "n/a"))
        _LOGGER.info("segment: %d clip(s) from %d source(s), %.2f h; %d short region(s) dropped, %d two-voice "
                     "clip(s) flagged, %d source(s) unreadable -> %s", s["clips"], s["sources"], s["hours"],
                     s["dropped_short"], s["speaker_change_clips"], len(s["failed"]), args.out)

    return cli.run("segment", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
