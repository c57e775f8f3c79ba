"""train: fine-tune a Piper-shaped VITS voice on the dataset (or train one from scratch).

Reads:  <dataset>/metadata*.csv, wavs/, phonemes.csv (written by build_dataset);
        train.init_from: 'joe' (the bundled Piper voice), a Piper .onnx with
        its .onnx.json, or a voice folder this stage wrote (read before
        anything is written, so it may be <out> itself)
Writes: <out>/model.pth (weights with the discriminator, step, preset),
        <out>/config.json (coqui's VitsConfig), <out>/voice.json (the Piper
        voice config: espeak voice, phoneme_id_map, sample rate, inference
        scales), and DVCLive training curves in <live> (metrics.json,
        plots/metrics/{train,eval}/*.tsv: losses per step, and the listening
        scores at each evaluation), and <checkpoints>: checkpoints to resume
        from, and each evaluation's audio (see voicemill/tts/checkpoints.py)
Params: common.sample_rate_hz, common.language, common.seed, train.*
Recipe: from a Piper voice, `align_steps` cheap steps teach the posterior
        encoder the voice's own latent (voicemill/tts/align.py), then
        `warmup_steps` steps train the duration posterior and the
        discriminator against the frozen generator; then `adapt_parts` adapt
        at `lr_adapt` with the adversarial loss ramping in (see
        voicemill/tts/training.py and the README, "Training a voice").
Resume: interrupted (Ctrl-C, kill -9, a power cut), the next run resumes
        from the newest complete checkpoint of the same run: same preset,
        init_from, dataset and recipe params (raising max_steps continues a
        finished run; changing the recipe starts fresh and says why).
Best:   with eval_every, held-out sentences are scored as training goes
        (WER, Distill-MOS, speaker similarity; voicemill/tts/listening.py)
        and the best checkpoint by their composite is the voice written to
        <out>; patience stops a run that has stopped improving.
Devices: train.devices (auto: every visible GPU, data-parallel), precision
        (fp32, bf16, fp16), grad_accumulation, grad_clip.
Usage:  python -m stages.train [--dataset data/dataset] [--out models/tts]
            [--live metrics/train] [--checkpoints models/checkpoints]
Experiment: dvc exp run -S train.lr_adapt=2e-5 -S train.max_steps=400
Sweep:  dvc exp run --queue -S 'train.lr_adapt=5e-6,1e-5,2e-5'; dvc queue start;
        dvc exp show --only-changed (the column best.composite compares them)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from voicemill import cli, params

_LOGGER = logging.getLogger("stages.train")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "train")
    p.add_argument("--dataset", default="data/dataset", help="build_dataset output (default: %(default)s)")
    p.add_argument("--out", default="models/tts", help="voice folder (default: %(default)s)")
    p.add_argument("--live", default="metrics/train", help="DVCLive folder (default: %(default)s)")
    p.add_argument("--checkpoints", default="models/checkpoints",
                   help="checkpoints of this run, resumed from when interrupted (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        cli.sweep("train", args.out, args.live, args.checkpoints)
        from voicemill.tts.training import TrainOptions, train

        common, opts = params.load(Path(args.params), "train")
        _, evaluate = params.load(Path(args.params), "evaluate")  # its ASR model listens during training too
        s = train(Path(args.dataset), Path(args.out), Path(args.live), params.fill(TrainOptions, opts, common, evaluate),
                  checkpoints_dir=Path(args.checkpoints))
        _LOGGER.info("train: %s from %s, %d step(s) (%s) on %d clip(s)%s, %.1f M generator parameters, %.0f s; "
                     "step %d -> %s", opts.preset, opts.init_from or "scratch", s["steps"], ", ".join(s["phases"]),
                     s["train_clips"], f", resumed at step {s['resumed_from']}" if s["resumed_from"] >= 0 else "",
                     s["parameters"] / 1e6, s["seconds"], s["chosen_step"], args.out)

    return cli.run("train", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
