"""evaluate: synthesize the validation sentences and score them against the real recordings.

Reads:  <voice>/model.pth + config.json (train), <dataset>/metadata_val.csv and
        wavs/ (build_dataset)
Writes: <metrics> (metrics/eval.json): see voicemill/evaluate.py for every key;
        "_gt" keys are the same metric on the real recordings of the same
        sentences, "_ci95" the half-width of a 95% confidence interval over
        utterances.
        <scores> (metrics/eval_scores.csv): one row per utterance, plot data
        for `dvc plots`
        <report>/<clip_id>.wav: the synthesized audio
        <html> (reports/eval.html): a self-contained listening report
        <plots> (reports/plots): the training curves (<live>, metrics/train)
        and the per-utterance scores as SVG and PNG (voicemill/plots.py)
        <training-html> (reports/training.html): each listening evaluation
        of the training (<checkpoints>/eval/step-*): curves, audio, scores
        <cloning-html> (reports/cloning.html): per sentence the target's
        recording, the voice, the voice it was trained from and the
        recording's reconstruction, each scored; how far the voice moved
        (voicemill/cloning.py; "cloning" in <metrics>)
Params: common.language, common.seed, evaluate.*
Usage:  python -m stages.evaluate [--voice models/tts] [--dataset data/dataset]
            [--metrics metrics/eval.json] [--scores metrics/eval_scores.csv]
            [--report reports/eval] [--html reports/eval.html]
        Score any folder of WAVs named <clip_id>.wav (another checkpoint, another
        TTS system) instead of synthesizing:
        python -m stages.evaluate --synth-dir DIR --metrics other.json \\
            --scores other.csv --html other.html
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from voicemill import cli, params
from voicemill.fsutil import atomic_path, without_nan, write_json

_LOGGER = logging.getLogger("stages.evaluate")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, "evaluate")
    p.add_argument("--voice", default="models/tts", help="trained voice folder (default: %(default)s)")
    p.add_argument("--dataset", default="data/dataset", help="LJSpeech dataset (default: %(default)s)")
    p.add_argument("--synth-dir", help="score the WAVs in this folder (<clip_id>.wav) instead of a trained voice")
    p.add_argument("--metrics", default="metrics/eval.json", help="metrics file (default: %(default)s)")
    p.add_argument("--scores", default="metrics/eval_scores.csv", help="per-utterance scores (default: %(default)s)")
    p.add_argument("--report", default="reports/eval", help="synthesized audio (default: %(default)s)")
    p.add_argument("--html", default="reports/eval.html", help="listening report (default: %(default)s)")
    p.add_argument("--plots", help="SVG and PNG curves of the training and of these scores (default: plots/ "
                   "beside --html, reports/plots; '' = none)")
    p.add_argument("--training-html", help="a page of what each listening evaluation of the training heard "
                   "(default: training.html beside --html, reports/training.html; '' = none)")
    p.add_argument("--cloning-html", help="a page of the target's recordings, the voice, the voice it was trained "
                   "from and the reconstruction, side by side (default: cloning.html beside --html; '' = none; "
                   "not with --synth-dir)")
    p.add_argument("--checkpoints", default="models/checkpoints", help="the train stage's checkpoints, whose "
                   "eval/step-* folders the training page links (default: %(default)s)")
    p.add_argument("--live", default="metrics/train", help="the train stage's DVCLive folder, whose curves are "
                   "drawn (default: %(default)s)")
    args = p.parse_args(argv)
    cli.setup_logging(args.debug)
    beside = Path(args.html).parent
    args.plots = str(beside / "plots") if args.plots is None else args.plots
    args.training_html = str(beside / "training.html") if args.training_html is None else args.training_html
    if args.cloning_html is None:
        args.cloning_html = "" if args.synth_dir else str(beside / "cloning.html")
    elif args.cloning_html and args.synth_dir:
        p.error("--cloning-html needs a trained voice (--voice), not --synth-dir")

    def body():
        cli.sweep("evaluate", args.metrics, args.scores, args.report, args.html, args.plots, args.training_html,
                  args.cloning_html)
        from voicemill import evaluate, report

        common, opts = params.load(Path(args.params), "evaluate")
        eval_opts = params.fill(evaluate.EvalOptions, opts, common)
        t0 = time.monotonic()
        sentences = evaluate.read_eval_sentences(Path(args.dataset), opts.max_utterances)
        ids = [cid for cid, _ in sentences]
        real = evaluate.load_set(Path(args.dataset) / "wavs", ids)
        if args.synth_dir:
            synth, rtf = evaluate.load_set(Path(args.synth_dir), ids), None
            source = args.synth_dir
        else:
            out = Path(args.report)
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            from voicemill.tts.coqui import load_voice

            voice = load_voice(Path(args.voice))
            synth, rtf = evaluate.synthesize_set(Path(args.voice), sentences, out, eval_opts, voice)
            source = args.voice
        judges = evaluate.Judges.load(eval_opts.asr_model, eval_opts.num_threads, eval_opts.language)
        metrics, rows = evaluate.score_sets(sentences, synth, real, eval_opts, judges)
        if rtf is not None:
            metrics["speed"] = {"rtf_torch": rtf, "threads": opts.num_threads}
        cloning_page = None
        if args.cloning_html:
            from voicemill import cloning

            metrics["cloning"], cloning_rows, cloning_clips = cloning.compare(
                sentences, real, synth, rows, Path(args.voice), judges, Path(args.report), opts.num_threads, voice)
            cloning_page = report.render_cloning(without_nan(metrics["cloning"]), cloning_rows, cloning_clips)
        metrics = without_nan(metrics)  # the report shows what the metrics file holds
        with atomic_path(Path(args.scores)) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        write_json(Path(args.metrics), metrics)
        with atomic_path(Path(args.html)) as tmp:
            tmp.write_text(report.render(metrics, rows, synth, real, f"voicemill evaluation: {source}"))
        if cloning_page is not None:
            with atomic_path(Path(args.cloning_html)) as tmp:
                tmp.write_text(cloning_page)
        if args.plots:
            from voicemill.plots import curve_specs, render_curves

            live = Path(args.live) if args.live and Path(args.live).is_dir() else None
            render_curves(curve_specs(live, Path(args.scores)), Path(args.plots))
        if args.training_html:
            evals = report.read_evaluations(Path(args.checkpoints) / "eval")
            with atomic_path(Path(args.training_html)) as tmp:
                tmp.write_text(report.render_training(evals, Path(args.training_html)))
        i, q, s = metrics["intelligibility"], metrics["quality"], metrics["speaker"]
        _LOGGER.info("evaluate: %d utterance(s) in %.0f s: WER %.2f (real %.2f), DNSMOS %.2f (real %.2f), "
                     "Distill-MOS %.2f (real %.2f), speaker similarity %.2f (real %.2f), %d invalid -> %s, %s",
                     metrics["n_utterances"], time.monotonic() - t0, i["wer"], i["wer_gt"], q["dnsmos_ovrl"],
                     q["dnsmos_ovrl_gt"], q["distillmos"], q["distillmos_gt"], s["similarity"], s["similarity_gt"],
                     metrics["validity"]["failed"], args.metrics, args.html)

    return cli.run("evaluate", body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
