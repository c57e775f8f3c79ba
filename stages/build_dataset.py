"""build_dataset: normalise transcripts, filter, split, write an LJSpeech dataset.

Reads:  <clips>/manifest.parquet and clips (segment), <transcripts>/manifest.parquet
        (transcribe)
Writes: <out>/wavs/<clip_id>.wav, <out>/metadata.csv (id|raw|normalized),
        <out>/metadata_train.csv, <out>/metadata_val.csv (same format),
        <out>/manifest.parquet (every kept clip with its split), and
        metrics/dataset.json (clips, hours, dropped per reason)
Params: common.language, common.seed, build_dataset.*
Usage:  python -m stages.build_dataset [--clips data/clips]
            [--transcripts data/transcripts] [--out data/dataset]
            [--metrics metrics/dataset.json]
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from voicemill import cli, manifest, params
from voicemill.dataset import DatasetOptions, build_dataset
from voicemill.fsutil import write_json

_LOGGER = logging.getLogger("stages.build_dataset")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "build_dataset")
    p.add_argument("--clips", default="data/clips", help="segment output folder (default: %(default)s)")
    p.add_argument("--transcripts", default="data/transcripts", help="transcribe output (default: %(default)s)")
    p.add_argument("--out", default="data/dataset", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/dataset.json", help="metrics file (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        common, opts = params.load(Path(args.params), "build_dataset")
        clips = manifest.read(Path(args.clips) / "manifest.parquet", "clips")
        transcripts = manifest.read(Path(args.transcripts) / "manifest.parquet", "transcripts")
        out = Path(args.out)
        if out.exists():
            shutil.rmtree(out)
        summary = build_dataset(clips, Path(args.clips), transcripts, out,
                                params.fill(DatasetOptions, opts, common))
        write_json(Path(args.metrics), summary)
        _LOGGER.info("build_dataset: kept %d clip(s) (%d train, %d val), %.3f h; dropped %s -> %s",
                     summary["clips"], summary["train"], summary["val"], summary["hours"],
                     summary["dropped"] or "none", out)

    return cli.run("build_dataset", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
