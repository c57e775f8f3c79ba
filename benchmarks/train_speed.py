"""Training speed: optimizer steps per second of a preset, per device and precision, side by side.

Each configuration trains the same model (``--preset``, fine-tuned from the
bundled joe voice in the adapt phase: the generator's ``adapt_parts``, the
posterior encoder and the discriminator learn, the step a real fine-tune
spends its hours in) on the same clips with the same batch size, in this
process, one after another: a few untimed steps first (allocations, kernel
choice), then ``--steps`` timed ones. The peer every row is compared with is
fp32 on the CPU, measured in the same run.

Configurations: ``cpu fp32``; ``cpu bf16`` where the CPU has bfloat16
instructions (AVX-512 BF16 or AMX); and where CUDA is visible ``cuda fp32``,
``cuda bf16`` (where supported) and ``cuda fp16``.

The clips are the demo's sentences spoken by joe (``--dataset`` takes a
build_dataset folder instead). Writes <out>/train_speed.json.

Usage:  python -m benchmarks.train_speed [--preset piper-medium] [--steps 10] [--batch-size 4]
            [--dataset data/dataset] [--out reports/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

_LOGGER = logging.getLogger("benchmarks.train_speed")


def demo_dataset(root: Path, clips: int = 16) -> Path:
    """``clips`` of the demo's sentences in joe's voice, as an LJSpeech folder with phonemes.csv."""
    from voicemill.audio import write_wav
    from voicemill.demo import EPISODES, Line, load_voice, speak
    from voicemill.textnorm import normalize
    from voicemill.tts import phonemes

    voice = load_voice()
    texts = [s.text if isinstance(s, Line) else s for e in EPISODES for s in e.sentences][:clips]
    (root / "wavs").mkdir(parents=True)
    rows = []
    for k, text in enumerate(texts):
        audio, rate, _ = speak(voice, Line(text))
        write_wav(root / "wavs" / f"s{k:03d}.wav", audio, rate)
        rows.append(f"s{k:03d}|{text}|{normalize(text, 'en')}")
    for name in ("metadata.csv", "metadata_train.csv"):
        (root / name).write_text("\n".join(rows) + "\n")
    (root / "metadata_val.csv").write_text("")
    phonemes.write_dataset_phonemes(root, phonemes.FrontEnd.create("en"))
    return root


def configurations() -> list[tuple[str, str]]:
    configs = [("cpu", "fp32")]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        configs.append(("cpu", "bf16"))
    if torch.cuda.is_available():
        configs.append(("cuda", "fp32"))
        if torch.cuda.is_bf16_supported():
            configs.append(("cuda", "bf16"))
        configs.append(("cuda", "fp16"))
    return configs


def measure(dataset: Path, preset: str, device: str, precision: str, steps: int, batch_size: int,
            warm: int = 2) -> dict:
    from voicemill.tts.distributed import Devices, Group
    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import Loop, Phase, TrainOptions, check_precision, load_clips, resolve_start

    opts = TrainOptions(preset=preset, init_from="joe" if preset.startswith("piper-") else "")
    torch.manual_seed(opts.seed)
    start = resolve_start(opts)
    group = Group(0, Devices(device, (0,)))
    model = start.model.to(group.device)
    data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), opts.sample_rate_hz)
    helpers = {"posterior": opts.lr, "duration_post": opts.lr, "disc": opts.lr}
    phase = Phase("adapt", warm + steps, {**helpers, **{p: opts.lr_adapt for p in opts.adapt_parts}})
    loop = Loop(model, data, [phase], batch_size, opts.seed, group,
                autocast_dtype=check_precision(precision, group.device))
    model.train()
    for _ in range(warm):
        loop.run_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loop.run_step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    audio_s = sum(len(a) for a in data.audio) / len(data) / opts.sample_rate_hz * batch_size * steps
    return {"device": device if device == "cpu" else torch.cuda.get_device_name(0), "precision": precision,
            "steps": steps, "seconds": round(seconds, 2), "steps_per_s": round(steps / seconds, 4),
            "audio_s_per_s": round(audio_s / seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="piper-medium")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--dataset", type=Path, help="a build_dataset folder (default: the demo's sentences)")
    p.add_argument("--out", type=Path, default=Path("reports/benchmarks"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("voicemill.tts.piper_import", "TTS"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or demo_dataset(Path(tmp) / "dataset")
        rows = []
        for device, precision in configurations():
            _LOGGER.info("%s %s: %d steps of %s, batch %d", device, precision, args.steps, args.preset,
                         args.batch_size)
            rows.append(measure(dataset, args.preset, device, precision, args.steps, args.batch_size))
    peer = rows[0]["steps_per_s"]
    print(f"\n{args.preset}, batch {args.batch_size}, {args.threads} CPU threads; peer: cpu fp32 in this run")
    print(f"{'device':<28} {'precision':<9} {'steps/s':>8} {'audio s/s':>10} {'vs peer':>8}")
    for r in rows:
        r["vs_cpu_fp32"] = round(r["steps_per_s"] / peer, 3)
        print(f"{r['device']:<28} {r['precision']:<9} {r['steps_per_s']:>8.3f} {r['audio_s_per_s']:>10.2f} "
              f"{r['vs_cpu_fp32']:>7.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(
        {"preset": args.preset, "batch_size": args.batch_size, "threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
