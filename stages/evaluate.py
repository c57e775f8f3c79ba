"""evaluate: synthesize the validation sentences and score them against the real recordings.

Reads:  <voice>/model.pth + config.json (train), <dataset>/metadata_val.csv and
        wavs/ (build_dataset)
Writes: <metrics> (metrics/eval.json): n_utterances; intelligibility.{wer, wer_gt,
        cer, cer_gt, wer_mean}; quality.dnsmos_{ovrl,sig,bak,p808}[_gt];
        speaker.{similarity, similarity_gt}; speed.rtf_torch; validity.failed.
        "_gt" is the same metric on the real recordings of the same sentences.
        <scores> (metrics/eval_scores.csv: one row per utterance, plot data for
        `dvc plots`) and <report>/<clip_id>.wav (the synthesized audio)
Params: common.language, common.seed, evaluate.asr_model,
        evaluate.max_utterances, evaluate.num_threads
Usage:  python -m stages.evaluate [--voice models/tts] [--dataset data/dataset]
            [--metrics metrics/eval.json]
            [--scores metrics/eval_scores.csv] [--report reports/eval]
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from voicemill import cli, params
from voicemill.fsutil import atomic_path, write_json

_LOGGER = logging.getLogger("stages.evaluate")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "evaluate")
    p.add_argument("--voice", default="models/tts", help="trained voice folder (default: %(default)s)")
    p.add_argument("--dataset", default="data/dataset", help="LJSpeech dataset (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/eval.json", help="metrics file (default: %(default)s)")
    p.add_argument("--scores", default="metrics/eval_scores.csv", help="per-utterance scores (default: %(default)s)")
    p.add_argument("--report", default="reports/eval", help="synthesized audio (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)

    def body():
        from voicemill.evaluate import EvalOptions, evaluate

        common, opts = params.load(Path(args.params), "evaluate")
        report = Path(args.report)
        if report.exists():
            shutil.rmtree(report)
        t0 = time.monotonic()
        metrics, rows = evaluate(Path(args.voice), Path(args.dataset), report, params.fill(EvalOptions, opts, common))
        with atomic_path(Path(args.scores)) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        write_json(Path(args.metrics), metrics)
        i, q, s = metrics["intelligibility"], metrics["quality"], metrics["speaker"]
        _LOGGER.info("evaluate: %d utterance(s) in %.0f s: WER %.2f (real %.2f), DNSMOS %.2f (real %.2f), "
                     "speaker similarity %.2f (real %.2f), RTF %.3f, %d invalid -> %s",
                     metrics["n_utterances"], time.monotonic() - t0, i["wer"], i["wer_gt"], q["dnsmos_ovrl"],
                     q["dnsmos_ovrl_gt"], s["similarity"], s["similarity_gt"], metrics["speed"]["rtf_torch"],
                     metrics["validity"]["failed"], args.metrics)

    return cli.run("evaluate", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
