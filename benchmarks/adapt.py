"""Does fine-tuning from joe move the voice toward a new speaker while it stays intelligible?

The target is a voice that differs from joe: the demo's guest (joe spoken
1.3x slower and played 1.3x faster: pitch and formants 30 % up, the same
speed), saying every sentence of the demo episodes and the reference and
:data:`EXTRA_SENTENCES` (83 sentences, 5.3 minutes of speech; 6 held out for
scoring). Training is ``voicemill.tts.training``
with the train params' recipe (warm-up, then the adapt phase), from the
bundled joe voice, for as long as ``--minutes`` allows.

At every checkpoint (``--eval-every`` steps, and step 0: joe itself) the 6
held-out sentences are synthesized and scored:

- ``sim_target``: resemblyzer cosine to the centroid of the target's real
  recordings of those sentences; ``sim_joe``: to joe's renderings of them;
- ``wer``: tiny.en round trip, normalised; ``distillmos``: Distill-MOS.

Goal (the issue's, for a GPU run): sim_target >= 0.85 with WER <= 0.10. On
CPU: every checkpoint WER <= 0.15 and Distill-MOS >= 3.5, and sim_target at
least 0.05 above joe's own (step 0) by the last checkpoint.

With ``--dataset data/dataset`` the target is the demo itself (joe's own
recordings): then any change is damage, which is how the recipe's parts and
rates were chosen (README, "Training a voice").

Writes <out>/adapt.json (params and the curve), adapt.csv, adapt.png.
Usage:  python -m benchmarks.adapt [--minutes 30] [--eval-every 100] [--out reports/adapt]
            [--lr-adapt 1e-5] [--adapt-parts flow decoder] [--warmup-steps 60]
        python -m benchmarks.adapt --dataset data/dataset --adapt-parts flow decoder \
            --max-steps 120 --eval-every 60 --out reports/adapt-demo
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
HELD_OUT = 6
#: More of the target's speech, beyond the demo's sentences, so the target has over 5 minutes.
EXTRA_SENTENCES = (
    "The library opens at nine on weekdays and at ten on Sundays.",
    "My sister moved to the coast last spring and now sails every weekend.",
    "Please remember to bring a warm jacket, because the evenings get cold.",
    "The old bridge was repaired in 2019 after the great flood.",
    "We planted forty apple trees along the southern edge of the field.",
    "Her first novel sold more than ten thousand copies in a single month.",
    "The museum has a small room full of clocks that all show different times.",
    "If the bus is late again, we will walk the rest of the way.",
    "A cup of hot chocolate costs $3.20 at the kiosk by the harbour.",
    "The choir practises on Tuesday evenings in the hall behind the church.",
    "Nobody knew who had left the bicycle leaning against the gate.",
    "The recipe calls for two eggs, a cup of milk, and a pinch of salt.",
    "After the storm, the beach was covered in seaweed and driftwood.",
    "Our neighbour keeps bees, and every autumn she gives us a jar of honey.",
    "The train to the mountains climbs slowly through the pine forest.",
    "He fixed the roof himself, with a ladder, a hammer, and a lot of patience.",
    "The market sells fresh fish on Fridays and cheese on Saturdays.",
    "At the end of the lane there is a blue door with a brass knocker.",
    "The children counted the stars until they fell asleep on the grass.",
    "This year the festival will last five days instead of three.",
    "The lighthouse keeper wrote a letter to his daughter every single week.",
    "Turn left at the bakery, then keep going until you reach the river.",
    "The team scored twice in the last ten minutes and won the cup.",
    "Snow fell all night, and by morning the village was quiet and white.",
    "Thank you for listening, and have a lovely evening.",
)


def target_dataset(out: Path) -> Path:
    """The guest voice saying the demo's sentences, as an LJSpeech dataset with phonemes.csv."""
    from voicemill import demo
    from voicemill.audio import write_wav
    from voicemill.textnorm import normalize
    from voicemill.tts.phonemes import FrontEnd, write_dataset_phonemes

    if (out / "phonemes.csv").exists():
        return out
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    voice = demo.load_voice()
    texts = [line.text for ep in demo.EPISODES for line in ep.lines] + list(demo.REFERENCE_SENTENCES)
    texts += list(EXTRA_SENTENCES)
    rows, seconds = [], 0.0
    for k, text in enumerate(texts):
        audio, rate, _ = demo.speak(voice, demo.Line(text, demo.GUEST))
        pad = np.zeros(int(0.15 * rate), np.float32)
        write_wav(out / "wavs" / f"g{k:03d}.wav", np.concatenate([pad, audio, pad]), rate)
        rows.append(f"g{k:03d}|{text}|{normalize(text, 'en')}")
        seconds += len(audio) / rate
    # Hold out every ninth sentence (a spread of lengths), HELD_OUT of them.
    val = set(range(4, len(rows), 9)[:HELD_OUT])
    (out / "metadata.csv").write_text("\n".join(rows) + "\n")
    (out / "metadata_train.csv").write_text("\n".join(r for k, r in enumerate(rows) if k not in val) + "\n")
    (out / "metadata_val.csv").write_text("\n".join(r for k, r in enumerate(rows) if k in val) + "\n")
    write_dataset_phonemes(out, FrontEnd.create("en"))
    _LOGGER.info("target dataset: %d sentences, %.1f min -> %s", len(rows), seconds / 60, out)
    return out


class Scorer:
    """Scores a model's renderings of the held-out sentences against the target's and joe's recordings."""

    def __init__(self, dataset: Path, front):
        from voicemill import asr, demo, scoring
        from voicemill.audio import read_wav
        from voicemill.tts.coqui import read_metadata

        self.scoring, self.asr = scoring, asr
        self.rows = read_metadata(dataset / "metadata_val.csv")
        self.ids = {cid: front.text_to_ids_normalized(norm) for cid, _, norm in self.rows}
        self.whisper = asr.load_model("tiny.en", cpu_threads=2)
        self.mos = scoring.DistillMOS()
        self.enc = scoring.SpeakerEncoder()
        self.target = scoring.mean_embedding([self.enc.embed(*read_wav(dataset / "wavs" / f"{cid}.wav"))
                                              for cid, _, _ in self.rows])
        joe = demo.load_voice()
        self.joe = scoring.mean_embedding([self.enc.embed(*demo.speak(joe, demo.Line(raw))[:2])
                                           for _, raw, _ in self.rows])

    def __call__(self, model) -> dict:
        from voicemill.tts.coqui import DEFAULT_INFERENCE, synthesize_ids

        was_training = model.training
        model.eval()
        torch.manual_seed(0)
        wers, moss, st, sj = [], [], [], []
        for cid, raw, _ in self.rows:
            audio = synthesize_ids(model, self.ids[cid], **DEFAULT_INFERENCE)
            heard = self.asr.transcribe(self.whisper, self.scoring.to_16k(audio, 22050), "en")["text"]
            wers.append(self.scoring.wer(raw, heard))
            moss.append(self.mos(audio, 22050))
            e = self.enc.embed(audio, 22050)
            st.append(self.scoring.cosine(e, self.target))
            sj.append(self.scoring.cosine(e, self.joe))
        model.train(was_training)
        return {"wer": float(np.mean(wers)), "distillmos": float(np.mean(moss)), "sim_target": float(np.mean(st)),
                "sim_joe": float(np.mean(sj))}


def plot(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curve]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(steps, [c["sim_target"] for c in curve], "o-", label="to the target")
    axes[0].plot(steps, [c["sim_joe"] for c in curve], "s--", label="to joe")
    axes[0].set_title("speaker similarity")
    axes[0].legend()
    axes[1].plot(steps, [c["wer"] for c in curve], "o-")
    axes[1].axhline(0.15, color="grey", lw=0.8)
    axes[1].set_title("WER (tiny.en)")
    axes[2].plot(steps, [c["distillmos"] for c in curve], "o-")
    axes[2].axhline(3.5, color="grey", lw=0.8)
    axes[2].set_title("Distill-MOS")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from voicemill import params as vparams
    from voicemill.fsutil import write_json
    from voicemill.tts.training import TrainOptions, load_clips, plan, resolve_start, run_phases

    defaults = vparams.TrainParams()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget for training and scoring")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--out", default="reports/adapt")
    p.add_argument("--lr-adapt", type=float, default=defaults.lr_adapt)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--adapt-parts", nargs="+", default=defaults.adapt_parts)
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--adversarial-ramp-steps", type=int, default=defaults.adversarial_ramp_steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--max-steps", type=int, default=100000, help="stop here even with time left")
    p.add_argument("--dataset", default=None,
                   help="an LJSpeech dataset (with phonemes.csv) as the target instead of the guest voice, "
                        "e.g. data/dataset: joe's own recordings, where any change is damage")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = TrainOptions(init_from="joe", preset="piper-medium", lr=args.lr, lr_adapt=args.lr_adapt,
                        adapt_parts=tuple(args.adapt_parts), warmup_steps=args.warmup_steps,
                        adversarial_ramp_steps=args.adversarial_ramp_steps, batch_size=args.batch_size)
    dataset = Path(args.dataset) if args.dataset else target_dataset(out / "target")
    start = resolve_start(opts)
    from voicemill.tts.phonemes import dataset_ids

    data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), 22050)
    score = Scorer(dataset, start.front)
    deadline = time.monotonic() + args.minutes * 60
    curve = [{"step": 0, "phase": "joe", **score(start.model)}]
    _LOGGER.info("step 0 (joe): %s", curve[-1])

    class OutOfTime(Exception):
        pass

    step_seconds: list[float] = []

    def on_step(s):
        step_seconds.append(s.seconds)
        if s.step % args.eval_every == 0:
            curve.append({"step": s.step, "phase": s.phase, **score(start.model)})
            _LOGGER.info("step %d (%s): %s", s.step, s.phase, curve[-1])
            write_json(out / "adapt.json", {"args": vars(args), "curve": curve})
        # Stop while a whole evaluation interval and its scoring still fit.
        left = deadline - time.monotonic()
        if s.step % args.eval_every == 0 and left < args.eval_every * np.mean(step_seconds[-20:]) + 60:
            raise OutOfTime

    try:
        run_phases(start.model, data, plan(opts, start.kind, args.max_steps), opts.batch_size, opts.seed,
                   on_step=on_step)
    except OutOfTime:
        pass
    first, last = curve[0], curve[-1]
    verdict = {
        "checkpoints_intelligible": all(c["wer"] <= 0.15 and c["distillmos"] >= 3.5 for c in curve),
        "moved_toward_target": last["sim_target"] - first["sim_target"],
        "goal_cpu_met": all(c["wer"] <= 0.15 and c["distillmos"] >= 3.5 for c in curve)
        and last["sim_target"] >= first["sim_target"] + 0.05,
        "goal_gpu_met": last["sim_target"] >= 0.85 and last["wer"] <= 0.10,
        "seconds_per_step": float(np.mean(step_seconds)) if step_seconds else None,
    }
    write_json(out / "adapt.json", {"args": vars(args), "options": dataclasses.asdict(opts), "curve": curve,
                                    "verdict": verdict})
    import pandas as pd

    pd.DataFrame(curve).to_csv(out / "adapt.csv", index=False)
    plot(curve, out / "adapt.png")
    print(f"{'step':>6} {'phase':>7} {'sim_target':>10} {'sim_joe':>8} {'wer':>6} {'distillmos':>10}")
    for c in curve:
        print(f"{c['step']:>6} {c['phase']:>7} {c['sim_target']:>10.3f} {c['sim_joe']:>8.3f} {c['wer']:>6.3f} "
              f"{c['distillmos']:>10.2f}")
    print(json.dumps(verdict, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
