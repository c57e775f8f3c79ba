"""download: fetch every source in the sources file and record provenance.

Reads:  the sources file (default sources.yaml; see README "Your own sources")
Writes: <out>/<source_id>.wav          audio, 16-bit PCM, original rate and channels
        <out>/demo-*.truth.json         ground truth of the demo episodes
        <out>/manifest.parquet          one row per item: source_id, kind, origin (URL or
                                        path), title, channel, license, speaker, language,
                                        audio_path, duration_s, sample_rate, channels,
                                        sha256, truth_path, downloaded_at
        <out>/failures.json             sources that failed, with the reason
Params: common.seed, download.max_failed_share, download.timeout_s, download.retries
Usage:  python -m stages.download [--sources sources.yaml] [--out data/raw]
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pandas as pd

from voicemill import cli, manifest, params
from voicemill.download import download, read_sources
from voicemill.fsutil import write_json

_LOGGER = logging.getLogger("stages.download")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "download")
    p.add_argument("--sources", default="sources.yaml", help="sources file (default: %(default)s)")
    p.add_argument("--out", default="data/raw", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        common, opts = params.load(Path(args.params), "download")
        sources = read_sources(Path(args.sources))
        out = Path(args.out)
        if out.exists():
            shutil.rmtree(out)
        rows, failures = download(sources, out, common.seed, opts.timeout_s, opts.retries, quiet=not args.debug)
        write_json(out / "failures.json", failures)
        attempted = len(rows) + len(failures)
        if not rows:
            raise cli.StageError(f"no usable source in {args.sources} ({len(failures)} failed: see the warnings above)")
        if failures and len(failures) / attempted > opts.max_failed_share:
            raise cli.StageError(
                f"{len(failures)} of {attempted} sources failed, more than download.max_failed_share="
                f"{opts.max_failed_share}; fix or remove them in {args.sources} (reasons in {out}/failures.json)"
            )
        manifest.write(pd.DataFrame(rows), out / "manifest.parquet", "sources")
        hours = sum(r["duration_s"] for r in rows) / 3600
        _LOGGER.info("download: %d item(s) kept, %d failed, %.2f h of audio -> %s", len(rows), len(failures), hours, out)

    return cli.run("download", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
