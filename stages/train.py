"""train: train a coqui-tts VITS voice on the LJSpeech dataset.

Reads:  <dataset>/metadata.csv, metadata_train.csv, metadata_val.csv, wavs/
        (written by build_dataset); train.restore_path when fine-tuning
Writes: <out>/model.pth (weights, step, config), <out>/config.json (the VITS
        config: audio, characters, model sizes), and DVCLive training curves
        in <live> (metrics.json, plots/metrics/{train,eval}/*.tsv)
Params: common.sample_rate_hz, common.language, common.seed, train.*
Usage:  python -m stages.train [--dataset data/dataset] [--out models/tts]
            [--live metrics/train]
Experiment: dvc exp run -S train.lr=0.0005
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
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
        from voicemill.tts import TrainOptions, train

        common, opts = params.load(Path(args.params), "train")
        for folder in (Path(args.out), Path(args.live)):
            if folder.exists():
                shutil.rmtree(folder)
        t0 = time.monotonic()
        s = train(Path(args.dataset), Path(args.out), Path(args.live), params.fill(TrainOptions, opts, common))
        _LOGGER.info("train: %s preset, %d step(s) on %d clip(s) (%d val), %d parameters, %.0f s -> %s",
                     opts.preset, s["steps"], s["train_clips"], s["val_clips"], s["parameters"],
                     time.monotonic() - t0, args.out)

    return cli.run("train", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
