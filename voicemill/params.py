"""Typed params: one dataclass per ``params.yaml`` section.

DVC itself checks nothing in ``params.yaml``; a typo there would silently fall
back to a default. So each stage loads its section into a dataclass here: an
unknown key, a missing key or a wrong type fails at once with the key's name.
The library never reads ``params.yaml`` itself; stages call :func:`load` and
hand the dataclass to the library.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml
from voicemill.errors import VoicemillError


class ParamsError(VoicemillError, ValueError):
    """A params section is malformed; the message names the key and the file."""


@dataclass(frozen=True)
class CommonParams:
    sample_rate_hz: int = 22050
    """Sample rate of the clips and of the dataset."""
    language: str = "en"
    """Language of the dataset (ISO 639-1): text normalisation and ASR."""
    seed: int = 1234
    """Seed for every random choice (demo pauses, split, training)."""


@dataclass(frozen=True)
class DownloadParams:
    max_failed_share: float = 0.5
    """Fail the stage when more than this share of sources fails."""
    timeout_s: float = 600.0
    """Network timeout for URL sources: a stall this long fails the attempt."""
    retries: int = 3
    """Retries of a URL item on network errors, HTTP 429 and 5xx (not on 404)."""
    backoff_s: float = 2.0
    """First wait before a retry; doubled at each further retry."""
    rate_limit: str = ""
    """Download rate limit for URL sources, e.g. '2M' (bytes/s); empty for none."""


@dataclass(frozen=True)
class SegmentParams:
    vad_aggressiveness: int = 2
    """webrtcvad mode, 0 (keeps most) to 3 (keeps least)."""
    frame_ms: int = 30
    """VAD frame length: 10, 20 or 30 ms."""
    min_pause_ms: int = 300
    """A pause at least this long ends a speech region."""
    padding_ms: int = 150
    """Silence kept before and after speech in each clip."""
    min_duration_s: float = 1.0
    """Shorter regions are merged with a neighbour or dropped."""
    max_duration_s: float = 12.0
    """Longer regions are split at their longest internal pause."""
    target_lufs: float = -23.0
    """Integrated loudness of every clip after normalisation."""


@dataclass(frozen=True)
class TranscribeParams:
    model: str = "tiny.en"
    """'tiny.en' or 'base' (bundled), a local CTranslate2 dir, or a hub name."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""
    compute_type: str = "auto"
    """'auto' (int8 on CPU, float16 on CUDA) or a CTranslate2 compute type."""
    beam_size: int = 5
    cpu_threads: int = 0
    """CPU threads for CTranslate2; 0 lets it choose."""


@dataclass(frozen=True)
class BuildDatasetParams:
    val_share: float = 0.1
    """Share of clips held out for validation."""
    min_val_clips: int = 4
    """At least this many validation clips (when there are enough clips)."""
    min_words: int = 1
    """Drop clips whose transcript has fewer words."""
    min_duration_s: float = 0.5
    max_duration_s: float = 15.0


@dataclass(frozen=True)
class TrainParams:
    preset: str = "tiny"
    """Model size: 'tiny' (CPU demo and tests) or 'full' (the LJSpeech recipe, for GPUs)."""
    epochs: int = 10
    """Training epochs (each epoch is one pass over the training clips)."""
    max_steps: int = 0
    """Stop after this many optimiser steps (whichever of epochs and steps comes first); 0: no limit."""
    batch_size: int = 4
    lr: float = 0.0002
    """Learning rate of both the generator and the discriminator."""
    use_phonemes: bool = False
    """Phoneme input (needs system espeak-ng) instead of characters."""
    restore_path: str = ""
    """Checkpoint (.pth) to fine-tune from; empty trains from scratch."""
    num_threads: int = 2
    """torch CPU threads."""


@dataclass(frozen=True)
class EvaluateParams:
    asr_model: str = "tiny.en"
    """ASR model for the round trip; same choices as transcribe.model."""
    max_utterances: int = 8
    """Score at most this many validation sentences (fixed, sorted by id)."""
    num_threads: int = 2
    fad_backends: list[str] = dataclasses.field(default_factory=lambda: ["resemblyzer", "whisper"])
    """Embeddings for the Fréchet audio distance: resemblyzer, whisper, clap."""
    clap_model: str = ""
    """A transformers CLAP model dir or hub id; empty reports CLAP as unavailable."""


@dataclass(frozen=True)
class ExportParams:
    max_abs_diff: float = 0.05
    """Fail when ONNX and PyTorch outputs differ by more than this (same noise)."""


SECTIONS: dict[str, type] = {
    "common": CommonParams,
    "download": DownloadParams,
    "segment": SegmentParams,
    "transcribe": TranscribeParams,
    "build_dataset": BuildDatasetParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "export": ExportParams,
}


def _check_type(value, annotation, where: str):
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(annotation):
            try:
                return _check_type(value, arg, where)
            except ParamsError:
                pass
        raise ParamsError(f"{where}: expected {annotation}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is type(None):
        if value is None:
            return None
        raise ParamsError(f"{where}: expected null, got {value!r}")
    if not isinstance(value, annotation) or (annotation is not bool and isinstance(value, bool)):
        raise ParamsError(f"{where}: expected {annotation.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type, data: dict | None, where: str):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ParamsError."""
    data = data or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParamsError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys are: {', '.join(sorted(names))}"
        )
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return data


def load(path: Path, section: str):
    """Load ``common`` and ``section`` from a params file as dataclasses."""
    data = read_yaml(path)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    common = from_dict(CommonParams, data.get("common"), f"{path}: common")
    own = from_dict(SECTIONS[section], data.get(section), f"{path}: {section}")
    return common, own


def fill(cls: type, *sections):
    """Build library options ``cls`` from params sections, matching field names.

    The library takes its own option dataclasses (it never reads params.yaml);
    this copies every field of ``cls`` that one of ``sections`` has, the first
    section winning, and leaves the rest at their defaults.
    """
    values = {}
    for f in dataclasses.fields(cls):
        for section in sections:
            if hasattr(section, f.name):
                values[f.name] = getattr(section, f.name)
                break
    return cls(**values)


def defaults() -> dict:
    """Every section with its default values, as plain dicts."""
    return {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}


