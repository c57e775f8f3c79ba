"""export: write the trained voice as ONNX and check it against PyTorch.

Reads:  <voice>/model.pth + config.json (written by train)
Writes: <onnx> (models/voice.onnx) and <onnx>.json (how to feed it: sample
        rate, symbols, blank handling, scales), and <metrics>
        (metrics/export.json: max_abs_diff against PyTorch with the noise
        off, rtf_onnx, size_mb)
Params: export.max_abs_diff
Usage:  python -m stages.export [--voice models/tts] [--onnx models/voice.onnx]
            [--metrics metrics/export.json]
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from voicemill import cli, params
from voicemill.fsutil import write_json

_LOGGER = logging.getLogger("stages.export")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "export")
    p.add_argument("--voice", default="models/tts", help="trained voice folder (default: %(default)s)")
    p.add_argument("--onnx", default="models/voice.onnx", help="ONNX file to write (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/export.json", help="metrics file (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        from voicemill.export import export_onnx

        _, opts = params.load(Path(args.params), "export")
        s = export_onnx(Path(args.voice), Path(args.onnx), opts.max_abs_diff)
        write_json(Path(args.metrics), s)
        _LOGGER.info("export: %s (%.1f MB, %d symbols), max |ONNX - PyTorch| %.2e, ONNX RTF %.3f",
                     args.onnx, s["size_mb"], s["symbols"], s["max_abs_diff"], s["rtf_onnx"])

    return cli.run("export", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
