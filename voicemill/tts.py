"""Train and load coqui-tts VITS voices.

Two size presets:

- ``tiny``: a few hundred thousand parameters, for the CPU demo and the tests.
  It learns little in minutes, but runs every code path a real run does.
- ``full``: the sizes of coqui's LJSpeech VITS recipe, for GPUs.

The voice reads characters by default (the dataset's normalised text,
lowercased by coqui's ``basic_cleaners``); its alphabet is taken from the
dataset, so any language's letters work. ``use_phonemes`` switches to espeak
phonemes, which needs the system ``espeak-ng``.

A trained voice is a directory with ``model.pth`` (``{"model": state_dict}``,
what coqui's ``load_checkpoint`` reads) and ``config.json``: the artifact
carries its own config.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from voicemill.fsutil import atomic_path

_LOGGER = logging.getLogger(__name__)

PUNCTUATIONS = "!'(),-.:;? "

#: VitsArgs overrides per preset; "full" keeps coqui's recipe defaults.
PRESETS: dict[str, dict] = {
    "tiny": {
        "hidden_channels": 64,
        "hidden_channels_ffn_text_encoder": 128,
        "num_layers_text_encoder": 2,
        "num_layers_posterior_encoder": 4,
        "num_layers_flow": 2,
        "kernel_size_flow": 3,
        "upsample_initial_channel_decoder": 64,
        "resblock_kernel_sizes_decoder": [3],
        "resblock_dilation_sizes_decoder": [[1, 3, 5]],
        "periods_multi_period_discriminator": [2, 3],
        "use_sdp": False,
    },
    "full": {},
}


@dataclass(frozen=True)
class TrainOptions:
    preset: str = "tiny"
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 4
    lr: float = 0.0002
    use_phonemes: bool = False
    restore_path: str = ""
    num_threads: int = 2
    seed: int = 1234
    sample_rate_hz: int = 22050
    language: str = "en"


def read_metadata(path: Path) -> list[tuple[str, str, str]]:
    """Rows of an LJSpeech ``metadata.csv``: (id, raw, normalized)."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("|")
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 'id|raw|normalized', got {line!r}")
        rows.append((parts[0], parts[1], parts[2]))
    return rows


def alphabet(texts: list[str]) -> str:
    """Sorted letters used by the (lowercased) texts, punctuation excluded."""
    return "".join(sorted({c for t in texts for c in t.lower() if c not in PUNCTUATIONS and not c.isspace()}))


def build_config(dataset_dir: Path, opts: TrainOptions, output_path: Path):
    """A VitsConfig for the dataset and options."""
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import BaseDatasetConfig, CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import VitsArgs

    if opts.preset not in PRESETS:
        raise ValueError(f"train.preset must be one of {', '.join(PRESETS)}, got {opts.preset!r}")
    texts = [r[2] for r in read_metadata(dataset_dir / "metadata.csv")]
    dataset = BaseDatasetConfig(
        formatter="ljspeech",
        path=str(dataset_dir),
        meta_file_train="metadata_train.csv",
        meta_file_val="metadata_val.csv",
        language=opts.language,
    )
    audio = BaseAudioConfig(
        sample_rate=opts.sample_rate_hz, win_length=1024, hop_length=256, num_mels=80, mel_fmin=0, mel_fmax=None
    )
    characters = None
    if not opts.use_phonemes:
        characters = CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters",
            characters=alphabet(texts),
            punctuations=PUNCTUATIONS,
            pad="<PAD>",
            phonemes=None,
            eos=None,
            bos=None,
            blank="<BLNK>",
            is_unique=False,
            is_sorted=True,
        )
    tiny = opts.preset == "tiny"
    return VitsConfig(
        model_args=VitsArgs(**PRESETS[opts.preset]),
        audio=audio,
        run_name="voicemill",
        batch_size=opts.batch_size,
        eval_batch_size=opts.batch_size,
        batch_group_size=0 if tiny else 5,
        num_loader_workers=0 if tiny else 4,
        num_eval_loader_workers=0 if tiny else 2,
        run_eval=True,
        test_delay_epochs=10**9,  # no test sentences during training; `evaluate` does that
        epochs=opts.epochs,
        lr_gen=opts.lr,
        lr_disc=opts.lr,
        text_cleaner="basic_cleaners",
        use_phonemes=opts.use_phonemes,
        phoneme_language="en-us" if opts.language == "en" else opts.language,
        phoneme_cache_path=str(output_path / "phoneme_cache"),
        characters=characters,
        add_blank=True,
        compute_input_seq_cache=False,
        print_step=25,
        plot_step=1 if tiny else 25,
        print_eval=False,
        mixed_precision=False,
        output_path=str(output_path),
        datasets=[dataset],
        cudnn_benchmark=False,
        save_step=10**9,
        save_checkpoints=False,
        save_best_after=10**9,
        min_audio_len=1,
        max_audio_len=opts.sample_rate_hz * 20,
        test_sentences=[],
    )


class _StepLimit(Exception):
    """Raised from a step callback to end training at ``max_steps``."""


class DVCLiveLogger:
    """A coqui-trainer dashboard logger that writes DVCLive metrics and plots."""

    def __init__(self, live):
        self.live = live
        self.epoch = 0

    def _log(self, prefix: str, step: int, stats: dict) -> None:
        self.live.step = step
        for key, value in stats.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if value == value:  # skip NaN
                self.live.log_metric(f"{prefix}/{key}", value)

    def train_step_stats(self, step, stats):
        self._log("train", step, stats)

    def eval_stats(self, step, stats):
        self._log("eval", step, stats)

    def train_epoch_stats(self, step, stats):
        self._log("train_epoch", step, stats)
        self.epoch += 1
        _LOGGER.info("epoch %d done at step %d: mel loss %.2f, generator loss %.2f, discriminator loss %.2f",
                     self.epoch, step, float(stats.get("avg_loss_mel", float("nan"))),
                     float(stats.get("avg_loss_gen", float("nan"))), float(stats.get("avg_loss_disc", float("nan"))))

    # The trainer also calls these; figures, audio and artifacts are not kept.
    def add_config(self, config): ...
    def add_scalar(self, title, value, step): ...
    def add_artifact(self, file_or_dir, name, artifact_type, aliases=None): ...
    def add_text(self, title, text, step): ...
    def model_weights(self, model, step): ...
    def train_figures(self, step, figures): ...
    def train_audios(self, step, audios, sample_rate): ...
    def eval_figures(self, step, figures): ...
    def eval_audios(self, step, audios, sample_rate): ...
    def test_audios(self, step, audios, sample_rate): ...
    def test_figures(self, step, figures): ...
    def flush(self): ...
    def finish(self): ...


def train(dataset_dir: Path, out_dir: Path, live_dir: Path, opts: TrainOptions) -> dict:
    """Train a VITS voice on an LJSpeech dataset; writes ``model.pth`` and ``config.json``."""
    from dvclive import Live
    from trainer import Trainer, TrainerArgs
    from TTS.tts.datasets import load_tts_samples
    from TTS.tts.models.vits import Vits

    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.num_threads)
    if not _LOGGER.isEnabledFor(logging.DEBUG):
        # coqui's trainer prints every loss at every print step; the epoch lines
        # from DVCLiveLogger are enough unless --debug.
        logging.getLogger("trainer").setLevel(logging.WARNING)
    dataset_dir = Path(dataset_dir)
    for name in ("metadata.csv", "metadata_train.csv", "metadata_val.csv"):
        if not (dataset_dir / name).exists():
            raise FileNotFoundError(f"{dataset_dir / name}: not found; it is written by build_dataset")
    if opts.restore_path and not Path(opts.restore_path).exists():
        raise FileNotFoundError(f"train.restore_path: checkpoint {opts.restore_path} not found")

    work = Path(tempfile.mkdtemp(prefix="voicemill-train-"))
    try:
        config = build_config(dataset_dir, opts, work)
        train_samples, eval_samples = load_tts_samples(config, eval_split=True)
        model = Vits(config)
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            trainer = Trainer(
                TrainerArgs(restore_path=opts.restore_path or None),
                config,
                str(work),
                model=model,
                train_samples=train_samples,
                eval_samples=eval_samples,
                dashboard_logger=DVCLiveLogger(live),
                callbacks={"on_train_step_end": _stop_at(opts.max_steps)},
            )
            try:
                # Not trainer.fit(): it turns every exception into sys.exit(1) and
                # hides the cause; _fit() lets errors (and the step limit) through.
                trainer._fit()
            except _StepLimit:
                _LOGGER.info("reached train.max_steps=%d; a last evaluation pass", opts.max_steps)
                trainer.keep_avg_eval = None
                trainer.eval_epoch()
            steps = int(trainer.total_steps_done)
            eval_loss = {k: float(v) for k, v in (trainer.keep_avg_eval.avg_values if trainer.keep_avg_eval else {}).items()}
            live.summary = {"steps": steps, **{f"eval/{k}": v for k, v in eval_loss.items()}}
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "model.pth") as tmp:
            torch.save({"model": model.state_dict(), "step": steps, "config": config.to_dict()}, tmp)
        config.output_path = ""
        config.phoneme_cache_path = ""
        with atomic_path(out_dir / "config.json") as tmp:
            config.save_json(str(tmp))
        n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("disc."))
        return {"steps": steps, "train_clips": len(train_samples), "val_clips": len(eval_samples),
                "parameters": n_params, **{f"eval_{k}": v for k, v in eval_loss.items()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stop_at(max_steps: int):
    def callback(trainer) -> None:
        if max_steps and trainer.total_steps_done >= max_steps:
            raise _StepLimit
    return callback


def load_voice(voice_dir: Path):
    """Load a trained voice directory for inference (CPU, eval mode)."""
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits

    voice_dir = Path(voice_dir)
    for name in ("model.pth", "config.json"):
        if not (voice_dir / name).exists():
            raise FileNotFoundError(f"{voice_dir / name}: not found; it is written by the train stage")
    config = VitsConfig()
    config.load_json(str(voice_dir / "config.json"))
    model = Vits(config)
    model.load_checkpoint(config, str(voice_dir / "model.pth"), eval=True, strict=False)
    return model, config


def text_to_ids(model, text: str) -> list[int]:
    return model.tokenizer.text_to_ids(text)


@torch.no_grad()
def synthesize(model, text: str, noise_scale: float | None = None, noise_scale_dp: float | None = None):
    """Synthesize ``text``; float32 numpy waveform at the model's rate."""
    ids = torch.LongTensor(text_to_ids(model, text)).unsqueeze(0)
    if noise_scale is not None:
        model.inference_noise_scale = noise_scale
    if noise_scale_dp is not None:
        model.inference_noise_scale_dp = noise_scale_dp
    out = model.inference(ids, aux_input={"x_lengths": torch.LongTensor([ids.shape[1]])})
    return out["model_outputs"].squeeze().cpu().numpy()
