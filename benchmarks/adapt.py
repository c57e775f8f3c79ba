"""Does fine-tuning from joe make the voice become another speaker, and stay natural?

The target is a voice that is not joe, saying known text:

- ``--target kokoro:jf_alpha`` (or any of ``voicemill.kokoro.VOICES``): a real
  speaker of Kokoro-82M, synthesized sentence by sentence
  (``voicemill.kokoro.write_target_dataset``);
- ``--target guest``: the demo's guest (joe shifted 30 % up);
- ``--target path/to/dataset``: an LJSpeech dataset (``metadata_train.csv``,
  ``metadata_val.csv``, ``wavs/``), e.g. ``data/dataset``: joe's own
  recordings, where any change is damage.

``--train-minutes`` of the target's speech (10 by default) are trained on,
with the train stage's recipe (``voicemill.tts.training.plan`` from the train
params' defaults; ``--set key=value`` overrides one, e.g. ``--set
lr_adapt=5e-5``), from the bundled joe voice, for as long as ``--minutes``
allows. Ten held-out sentences are scored at step 0 (joe), at the end of the
align and warm-up phases, and every ``--eval-every`` steps of the adapt phase:

- ``sim_target``: resemblyzer cosine of the voice's renderings to the centroid
  of the target's held-out recordings; ``sim_joe``: to joe's renderings (step
  0) of the same sentences;
- ``wer``: tiny.en round trip; ``distillmos``: Distill-MOS;
- ``composite``: the train stage's listening composite
  (``voicemill.tts.listening.composite``, similarity = ``sim_target``), which
  picks the checkpoint the train stage would export;
- ``copy_sim_target``, ``copy_distillmos``: the target's held-out recordings
  copy-synthesized (posterior mean -> decoder): what the decoder can render of
  the target at that step, the bound on any recipe that keeps it.

And once: ``target_ceiling``, the target's own held-out recordings against
their centroid (what a perfect clone would score).

Goal (issue 25): the checkpoint the composite picks has sim_target >= 0.75,
Distill-MOS >= 3.5, WER <= 0.10, and sim_target > sim_joe.

Writes <out>/adapt.json (args, options, ceilings, curve, verdict), adapt.csv and adapt.png.
Usage:  python -m benchmarks.adapt --target kokoro:jf_alpha --minutes 60
        python -m benchmarks.adapt --target guest --minutes 30 --eval-every 100
        python -m benchmarks.adapt --target data/dataset --max-steps 180 --eval-every 60
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

_LOGGER = logging.getLogger("benchmarks.adapt")
HELD_OUT = 10


def target_dataset(target: str, cache: Path) -> Path:
    """The dataset folder of ``--target``: synthesized once into ``cache`` for a speaker, or the folder given."""
    from voicemill.errors import VoicemillError

    folder = Path(target)
    if folder.is_dir():
        for name in ("metadata_train.csv", "metadata_val.csv", "wavs"):
            if not (folder / name).exists():
                raise VoicemillError(f"--target {target}: {folder / name} not found; give an LJSpeech dataset "
                                     f"folder (as build_dataset writes), 'guest' or 'kokoro:VOICE'")
        return folder
    from voicemill import kokoro

    out = cache / target.replace(":", "-")
    kokoro.write_target_dataset(out, target, held_out=HELD_OUT)
    return out


def take_minutes(data, minutes: float, rate: int):
    """The first clips of ``data`` adding up to ``minutes`` of audio (all of them for 0)."""
    from voicemill.tts.training import ClipData

    if minutes <= 0:
        return data
    keep, total = [], 0.0
    for i, audio in enumerate(data.audio):
        if total >= minutes * 60:
            break
        keep.append(i)
        total += len(audio) / rate
    return ClipData([data.ids[i] for i in keep], [data.audio[i] for i in keep], [data.names[i] for i in keep])


class Scorer:
    """The train stage's listener on the held-out sentences, in this benchmark's terms (``sim_target``,
    ``sim_joe`` to joe's renderings at step 0, ``copy_*``), and the target's own ceiling."""

    def __init__(self, dataset: Path, front, rate: int, threads: int = 2):
        from voicemill.tts.listening import Listener

        self.rate = rate
        self.listener = Listener(dataset, front, "en", sentences=HELD_OUT, num_threads=threads)
        own = self.listener.ceiling()
        self.ceiling = {"sim_target": own["similarity"], "distillmos": own["distillmos"]}
        self.joe = None  # the centroid of joe's renderings: the first model scored (step 0)
        self.spoken: dict | None = None  # the last renderings' scores

    def __call__(self, model, speak: bool = True, copy: bool = True) -> dict:
        """Scores of ``model``; ``speak=False`` reuses the last renderings' (the generator has not moved)."""
        from voicemill import scoring

        if speak or self.spoken is None:
            heard = self.listener(model, self.rate)
            if self.joe is None:
                self.joe = scoring.mean_embedding(heard["embeddings"])
            s = heard["scores"]
            self.spoken = {"wer": s["wer"], "distillmos": s["distillmos"], "sim_target": s["similarity"],
                           "sim_joe": float(np.mean([scoring.cosine(e, self.joe) for e in heard["embeddings"]])),
                           "composite": s["composite"]}
        out = dict(self.spoken)
        if copy:
            c = self.listener.copy_scores(model)
            out.update(copy_sim_target=c["copy_similarity"], copy_distillmos=c["copy_distillmos"])
        return out


def plot(curve: list[dict], ceiling: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curve]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(steps, [c["sim_target"] for c in curve], "o-", label="voice to the target")
    axes[0].plot(steps, [c["sim_joe"] for c in curve], "s--", label="voice to joe")
    if all("copy_sim_target" in c for c in curve):
        axes[0].plot(steps, [c["copy_sim_target"] for c in curve], "^:", label="copy-synthesis to the target")
    axes[0].axhline(ceiling["sim_target"], color="green", lw=0.8, label="target's own recordings")
    axes[0].axhline(0.75, color="grey", lw=0.8)
    axes[0].set_title("speaker similarity")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [c["wer"] for c in curve], "o-")
    axes[1].axhline(0.10, color="grey", lw=0.8)
    axes[1].set_title("WER (tiny.en)")
    axes[2].plot(steps, [c["distillmos"] for c in curve], "o-", label="voice")
    if all("copy_distillmos" in c for c in curve):
        axes[2].plot(steps, [c["copy_distillmos"] for c in curve], "^:", label="copy-synthesis")
    axes[2].axhline(ceiling["distillmos"], color="green", lw=0.8, label="target's recordings")
    axes[2].axhline(3.5, color="grey", lw=0.8)
    axes[2].set_title("Distill-MOS")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _override(opts, pairs: list[str]):
    """``key=value`` pairs onto TrainOptions, typed by the field's default (lists: comma-separated)."""
    changes = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not hasattr(opts, key):
            raise SystemExit(f"--set {pair}: no train option {key!r}")
        current = getattr(opts, key)
        if isinstance(current, (tuple, list)):  # a list param: comma-separated items
            changes[key] = tuple(v for v in value.split(",") if v)
        elif isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(opts, **changes)


def verdict(best: dict) -> dict:
    return {"sim_target": best["sim_target"] >= 0.75, "distillmos": best["distillmos"] >= 3.5,
            "wer": best["wer"] <= 0.10, "closer_to_target_than_joe": best["sim_target"] > best["sim_joe"]}


def main(argv: list[str] | None = None) -> int:
    from voicemill.fsutil import write_json
    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import Loop, TrainOptions, check_options, load_clips, plan, resolve_start

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="kokoro:jf_alpha", help="guest, kokoro:VOICE or a dataset folder")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget for training and scoring")
    p.add_argument("--train-minutes", type=float, default=10.0, help="minutes of the target's speech to train "
                   "on (0 = every training clip)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between scorings")
    p.add_argument("--max-steps", type=int, default=100000, help="stop here even with time left")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="train options over the train params' defaults, e.g. lr_adapt=5e-5 adapt_parts=flow,decoder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="default reports/adapt/<target>")
    p.add_argument("--cache", default="reports/adapt/targets", help="where synthesized targets are kept")
    p.add_argument("--no-copy", action="store_true", help="skip the copy-synthesis scores (faster)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out = Path(args.out or Path("reports/adapt") / Path(args.target.replace(":", "-")).name)
    out.mkdir(parents=True, exist_ok=True)
    dataset = target_dataset(args.target, Path(args.cache))
    opts = _override(TrainOptions(init_from="joe", num_threads=args.threads), args.set)
    check_options(opts)  # an unknown part or a value out of range is named before any work
    start = resolve_start(opts)
    model = start.model
    data = take_minutes(load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front),
                                   opts.sample_rate_hz), args.train_minutes, opts.sample_rate_hz)
    seconds = sum(len(a) for a in data.audio) / opts.sample_rate_hz
    _LOGGER.info("target %s: %d clips, %.1f min to train on", args.target, len(data), seconds / 60)
    score = Scorer(dataset, start.front, opts.sample_rate_hz, args.threads)
    t_start = time.monotonic()
    deadline = t_start + args.minutes * 60
    phases = plan(opts, start.kind, args.max_steps)
    loop = Loop(model, data, phases, opts.batch_size, opts.seed, grad_clip=opts.grad_clip, ema_decay=opts.ema_decay,
                prior_mel_weight=opts.prior_mel_weight, stft_loss_weight=opts.stft_loss_weight)
    curve = [{"step": 0, "phase": "joe", "seconds": 0.0, **score(model, copy=False)}]
    report = {"args": vars(args), "options": dataclasses.asdict(opts), "train_clips": len(data),
              "train_minutes": seconds / 60, "phases": [f"{p.name} {p.steps}" for p in loop.phases],
              "target_ceiling": score.ceiling, "curve": curve}

    scoring_seconds: list[float] = []

    def record(phase: str) -> None:
        t0 = time.monotonic()
        with loop.averaged():  # the weights the train stage would listen to (its average, with ema_decay)
            scores = score(model, speak=loop.generator_trained, copy=not args.no_copy)
        scoring_seconds.append(time.monotonic() - t0)
        curve.append({"step": loop.step, "phase": phase, "seconds": time.monotonic() - t_start, **scores})
        _LOGGER.info("step %d (%s): %s", loop.step, phase, {k: round(v, 3) for k, v in curve[-1].items()
                                                              if isinstance(v, float)})
        write_json(out / "adapt.json", report)

    model.train()
    step_seconds: list[float] = []
    while loop.step < loop.total:
        log = loop.run_step()
        step_seconds.append(log.seconds)
        if log.step % 25 == 0:
            _LOGGER.info("step %d (%s): %.1f s/step, %s", log.step, log.phase, float(np.mean(step_seconds[-25:])),
                         ", ".join(f"{k[5:]} {v:.2f}" for k, v in log.losses.items()
                                   if k in ("loss_mel", "loss_kl", "loss_gen", "loss_align", "loss_disc", "loss_stft",
                                            "loss_prior_mel")))
        index, k = loop.locate(loop.step)
        phase_ended = k == 0 and index > 0 and loop.phases[index - 1].name in ("align", "warmup")
        # Align and warm-up leave the voice as it was: copy-synthesis scored once each, at their end.
        if phase_ended or (log.step % args.eval_every == 0 and log.phase not in ("align", "warmup")):
            record(log.phase)
        # Stop unless the steps to the next scoring (at the pace of the phase now running) and it still fit.
        to_next = args.eval_every - loop.step % args.eval_every if loop.generator_trained else args.eval_every
        if deadline - time.monotonic() < to_next * float(np.mean(step_seconds[-10:])) + max(
                scoring_seconds or [60.0]):
            break
    if curve[-1]["step"] != loop.step:
        record(loop.phases[min(loop.locate(loop.step)[0], len(loop.phases) - 1)].name)
    loop.finish()
    trained = [c for c in curve if c["step"] > 0 and c["phase"] not in ("align", "warmup")] or curve
    best = max(trained, key=lambda c: c["composite"])
    report["best"] = best
    report["verdict"] = verdict(best)
    report["seconds_per_step"] = float(np.mean(step_seconds)) if step_seconds else None
    write_json(out / "adapt.json", report)
    import pandas as pd

    pd.DataFrame(curve).to_csv(out / "adapt.csv", index=False)
    plot(curve, score.ceiling, out / "adapt.png")
    cols = ("sim_target", "sim_joe", "wer", "distillmos", "composite", "copy_sim_target", "copy_distillmos")
    print(f"target {args.target}: {len(data)} clips, {seconds / 60:.1f} min; its own recordings: sim "
          f"{score.ceiling['sim_target']:.3f}, Distill-MOS {score.ceiling['distillmos']:.2f}")
    print(f"{'step':>6} {'phase':>7} " + " ".join(f"{c:>15}" for c in cols))
    for c in curve:
        print(f"{c['step']:>6} {c['phase']:>7} " + " ".join(f"{c.get(k, float('nan')):>15.3f}" for k in cols))
    print(f"picked by the composite: step {best['step']}; goals: {json.dumps(report['verdict'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
