"""train: fine-tune a Piper-shaped VITS voice on the dataset (or train one from scratch).

Reads:  <dataset>/metadata*.csv, wavs/, phonemes.csv (written by build_dataset);
        train.init_from: 'joe' (the bundled Piper voice), a Piper .onnx with
        its .onnx.json, or a voice folder this stage wrote (read before
        anything is written, so it may be <out> itself)
Writes: <out>/model.pth (weights with the discriminator, step, preset),
        <out>/config.json (coqui's VitsConfig), <out>/voice.json (the Piper
        voice config: espeak voice, phoneme_id_map, sample rate, inference
        scales), and DVCLive training curves in <live> (metrics.json,
        plots/metrics/train/*.tsv)
Params: common.sample_rate_hz, common.language, common.seed, train.*
Recipe: from a Piper voice, `warmup_steps` steps train only what the voice
        lacks (posterior encoder, duration posterior, discriminator) against
        the frozen generator; then `adapt_parts` adapt at `lr_adapt` with the
        adversarial loss ramping in (see voicemill/tts/training.py and the
        README, "Training a voice").
Usage:  python -m stages.train [--dataset data/dataset] [--out models/tts]
            [--live metrics/train]
Experiment: dvc exp run -S train.lr_adapt=2e-5 -S train.max_steps=400
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from voicemill import cli, params

_LOGGER = logging.getLogger("stages.train")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "train")
    p.add_argument("--dataset", default="data/dataset", help="build_dataset output (default: %(default)s)")
    p.add_argument("--out", default="models/tts", help="voice folder (default: %(default)s)")
    p.add_argument("--live", default="metrics/train", help="DVCLive folder (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        from voicemill.tts.training import TrainOptions, train

        common, opts = params.load(Path(args.params), "train")
        if Path(args.live).exists():
            shutil.rmtree(args.live)
        s = train(Path(args.dataset), Path(args.out), Path(args.live), params.fill(TrainOptions, opts, common))
        _LOGGER.info("train: %s from %s, %d step(s) (%s) on %d clip(s), %.1f M generator parameters, %.0f s -> %s",
                     opts.preset, opts.init_from or "scratch", s["steps"], ", ".join(s["phases"]), s["train_clips"],
                     s["parameters"] / 1e6, s["seconds"], args.out)

    return cli.run("train", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
