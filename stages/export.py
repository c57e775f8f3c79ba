"""export: write the trained voice as a Piper voice, checked against PyTorch and loaded by Piper, and its
smaller fp16 and int8 variants, measured against it.

Reads:  <voice>/model.pth, config.json, voice.json (written by train)
Writes: <onnx> (models/voice.onnx) and <onnx>.json (the Piper voice config:
        what `piper`, Home Assistant and `voicemill speak` read; its voicemill
        section names the variants and the default one), each variant in
        export.variants beside it (models/voice.fp16.onnx, voice.int8.onnx,
        each with its own .onnx.json), and <metrics> (metrics/export.json:
        max_abs_diff against PyTorch with the noise off, rtf_onnx and rtf_joe
        in Piper's runtime on the same sentences, rtf_vs_joe, size_mb; under
        "variants" per variant size_mb, rtf, wer, distillmos, and against
        fp32 mel_distance_db, pesq, stoi; accepted or rejected and why;
        "default_variant")
Params: export, evaluate.asr_model
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
        from voicemill.tts import variants

        cli.sweep("export", args.onnx, args.metrics, *[variants.variant_path(args.onnx, n) for n in variants.NAMES])
        from voicemill.tts.export import export_voice

        sections = params.load_all(Path(args.params))
        opts = sections["export"]
        s = export_voice(Path(args.voice), Path(args.onnx), opts.max_abs_diff, opts.num_threads)
        s.update(variants.export_variants(Path(args.onnx), params.fill(variants.VariantOptions, opts,
                                                                       sections["evaluate"])))
        write_json(Path(args.metrics), s)
        sizes = ", ".join(f"{n} {m['size_mb']:.1f} MB RTF {m['rtf']:.3f}" for n, m in s["variants"].items())
        _LOGGER.info("export: %s (%.1f MB), max |ONNX - PyTorch| %.2e, Piper RTF %.3f (joe %.3f, %.2fx); "
                     "variants: %s; default %s", args.onnx, s["size_mb"], s["max_abs_diff"], s["rtf_onnx"],
                     s["rtf_joe"], s["rtf_vs_joe"], sizes or "none", s["default_variant"])

    return cli.run("export", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
