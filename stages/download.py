"""download: fetch every source in the sources file and record provenance.

Reads:  the sources file (default sources.yaml; see voicemill/sources.py and the
        README for every kind of entry) and, when set, the cookies file named by
        VOICEMILL_COOKIES_FILE (never copied into any output)
Writes: <out>/<source_id>.wav            audio, 16-bit PCM, original rate and channels
        <out>/<source_id>.<lang>.vtt     human-made subtitles, when asked for
        <out>/demo-*.truth.json          ground truth of the demo episodes (see voicemill/demo.py)
        <out>/demo-reference.wav         the demo's reference recording of the target voice
        <out>/manifest.parquet           one row per item: source_id, kind, entry,
                                         origin (URL, path, or file#row=N), title,
                                         channel, upload_date, playlist, license,
                                         speaker, role (voice | reference), language,
                                         text (Parquet datasets),
                                         subtitles (JSON list), truth_path, start_s,
                                         end_s, audio_path, duration_s, sample_rate,
                                         channels, size_bytes, sha256, fingerprint,
                                         downloaded_at
        <out>/failures.json              what failed: sources-file line, origin, reason
        The folder persists between runs: items already there and intact are kept.
Params: common.seed, download.*
Usage:  python -m stages.download [--sources sources.yaml] [--out data/raw]
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from voicemill import cli, params
from voicemill.download import FetchOptions, download
from voicemill.sources import read_sources

_LOGGER = logging.getLogger("stages.download")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "download")
    p.add_argument("--sources", default="sources.yaml", help="sources file (default: %(default)s)")
    p.add_argument("--out", default="data/raw", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        cli.sweep("download", args.out)
        common, opts = params.load(Path(args.params), "download")
        sources = read_sources(Path(args.sources))
        out = Path(args.out)
        fetch = dataclasses.replace(params.fill(FetchOptions, opts, common), quiet=not args.debug)
        rows, failures, counts = download(sources, out, fetch)
        hours = sum(r["duration_s"] for r in rows) / 3600
        _LOGGER.info("download: %d item(s), %.2f h of audio (%d fetched now, %d kept from the last run, %d removed), "
                     "%d failed -> %s", len(rows), hours, counts["fetched"], counts["kept"], counts["removed"],
                     len(failures), out)

    return cli.run("download", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
