"""segment: cut every downloaded recording into utterance clips at pauses.

Reads:  <raw>/manifest.parquet and the audio it lists (written by download)
Writes: <out>/wavs/<clip_id>.wav        16-bit PCM mono at common.sample_rate_hz,
                                        loudness-normalised to segment.target_lufs
        <out>/manifest.parquet          one row per clip: clip_id, source_id, path
                                        (relative to <out>), start_s, end_s (in the
                                        source), duration_s, sample_rate,
                                        loudness_lufs (before normalisation), peak
                                        (before), clipped_share (samples at full scale),
                                        source_text (the dataset's transcript when a
                                        Parquet row became exactly one clip, else "")
Params: common.sample_rate_hz, segment.* (the cut policy; see voicemill/segment.py)
Usage:  python -m stages.segment [--raw data/raw] [--out data/clips]
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from voicemill import cli, manifest, params
from voicemill.audio import AudioError, decode, write_wav
from voicemill.segment import CutPolicy, segment_audio

_LOGGER = logging.getLogger("stages.segment")


def segment(raw_dir: Path, out_dir: Path, rate: int, opts: params.SegmentParams) -> dict:
    sources = manifest.read(raw_dir / "manifest.parquet", "sources")
    policy = params.fill(CutPolicy, opts)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "wavs").mkdir(parents=True)
    rows, failed, dropped = [], [], 0
    for src in tqdm(sources.itertuples(), total=len(sources), desc="segment", unit="source", disable=None):
        try:
            samples = decode(raw_dir / src.audio_path, rate)
        except AudioError as e:
            _LOGGER.warning("skipped %s: %s", src.source_id, e)
            failed.append(src.source_id)
            continue
        clips, n_dropped = segment_audio(samples, rate, policy, opts.target_lufs)
        dropped += n_dropped
        # A dataset row that stays one clip keeps the dataset's own transcript.
        text = str(getattr(src, "text", "") or "")
        source_text = text if text and len(clips) == 1 else ""
        for i, (start, end, clip, measures) in enumerate(clips):
            clip_id = f"{src.source_id}_{i:04d}"
            path = f"wavs/{clip_id}.wav"
            write_wav(out_dir / path, clip, rate)
            rows.append({"clip_id": clip_id, "source_id": src.source_id, "path": path, "start_s": round(start, 3),
                         "end_s": round(end, 3), "duration_s": round(len(clip) / rate, 3), "sample_rate": rate,
                         "source_text": source_text, **measures})
    if not rows:
        raise cli.StageError(f"no clip was cut from the {len(sources)} source(s) in {raw_dir} "
                             f"({len(failed)} unreadable); check the audio, or lower segment.vad_aggressiveness")
    manifest.write(pd.DataFrame(rows), out_dir / "manifest.parquet", "clips")
    return {"clips": len(rows), "sources": len(sources) - len(failed), "failed": failed, "dropped_short": dropped,
            "hours": sum(r["duration_s"] for r in rows) / 3600}


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "segment")
    p.add_argument("--raw", default="data/raw", help="download output folder (default: %(default)s)")
    p.add_argument("--out", default="data/clips", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        common, opts = params.load(Path(args.params), "segment")
        s = segment(Path(args.raw), Path(args.out), common.sample_rate_hz, opts)
        _LOGGER.info("segment: %d clip(s) from %d source(s), %.2f h; %d short region(s) dropped, %d source(s) "
                     "unreadable -> %s", s["clips"], s["sources"], s["hours"], s["dropped_short"], len(s["failed"]),
                     args.out)

    return cli.run("segment", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
