"""export: write the trained voice as a Piper voice, checked against PyTorch and loaded by Piper.

Reads:  <voice>/model.pth, config.json, voice.json (written by train)
Writes: <onnx> (models/voice.onnx) and <onnx>.json (the Piper voice config:
        what `piper`, Home Assistant and `voicemill speak` read), and
        <metrics> (metrics/export.json: max_abs_diff against PyTorch with the
        noise off, rtf_onnx and rtf_joe in Piper's runtime on the same
        sentences, rtf_vs_joe, size_mb)
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
        cli.sweep("export", args.onnx, args.metrics)
        from voicemill.tts.export import export_voice

        _, opts = params.load(Path(args.params), "export")
        s = export_voice(Path(args.voice), Path(args.onnx), opts.max_abs_diff)
        write_json(Path(args.metrics), s)
        _LOGGER.info("export: %s (%.1f MB), max |ONNX - PyTorch| %.2e, Piper RTF %.3f (joe %.3f, %.2fx)",
                     args.onnx, s["size_mb"], s["max_abs_diff"], s["rtf_onnx"], s["rtf_joe"], s["rtf_vs_joe"])

    return cli.run("export", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
