"""Typed params: one dataclass per ``params.yaml`` section.

DVC itself checks nothing in ``params.yaml``; a typo there would silently fall
back to a default. So each stage loads its section into a dataclass here: an
unknown key, a missing key or a wrong type fails at once with the key's name.
The library never reads ``params.yaml`` itself; stages call :func:`load` and
hand the dataclass to the library.
"""

from __future__ import annotations

import dataclasses
import re
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
    min_speech_ms: int = 60
    """Shorter runs of speech frames are blips (clicks, coughs), not speech."""
    min_pause_ms: int = 450
    """A pause at least this long ends a speech region."""
    padding_ms: int = 150
    """Audio kept before and after speech in each clip (at most half the pause to a neighbour)."""
    min_duration_s: float = 1.0
    """Shorter regions are merged with a neighbour or dropped."""
    max_duration_s: float = 12.0
    """Longer regions are split at their longest internal pause."""
    energy_gate_db: float = 15.0
    """Inside a speech region, frames this far below its loud level count as pause (noise, music beds); 0 = off."""
    target_lufs: float = -23.0
    """Integrated loudness of every clip after normalisation."""
    true_peak_dbfs: float = -1.0
    """Ceiling for the 4x oversampled peak after normalisation."""
    fade_ms: int = 10
    """Fade-in and fade-out of every clip."""
    block_s: float = 30.0
    """Audio decoded and resampled per block; memory does not grow with the source."""
    dnsmos: bool = True
    """Score every clip with DNSMOS (SIG, BAK, OVRL); off for speed."""
    speaker: bool = True
    """Speaker embedding per clip: similarity to the target, two-voice flag; off for speed."""
    speaker_change_below: float = 0.75
    """Flag a clip as two voices when its speaker consistency (see voicemill/segment.py) is below this."""
    workers: int = 0
    """Sources segmented in parallel; 0 = one per CPU core."""


@dataclass(frozen=True)
class TranscribeParams:
    model: str = "tiny.en"
    """'tiny.en' or 'base' (bundled), a local CTranslate2 dir, or a hub name."""
    device: str = "auto"
    """'auto' (CUDA when CTranslate2 sees a GPU, else CPU), 'cpu' or 'cuda'."""
    compute_type: str = "auto"
    """'auto' (int8 on CPU, float16 on CUDA) or a CTranslate2 compute type."""
    beam_size: int = 5
    batch_size: int = 8
    """Clips packed into one 30 s Whisper window (1 s of silence apart), and windows decoded as one batch; 0 or 1:
    one call per clip (see voicemill/asr.py transcribe_clips)."""
    initial_prompt: str = ""
    """Text given to Whisper as preceding context in every window (spelling, names, style); empty for none."""
    cpu_threads: int = 0
    """CPU threads for CTranslate2; 0 lets it choose."""
    language: str = ""
    """'' decodes every clip in common.language; 'auto' detects each clip's language (multilingual models; an
    English-only model always hears 'en') and decodes in it."""
    language_mismatch_probability: float = 0.5
    """Mark language_mismatch when the detected language is not common.language with more than this probability."""
    fallback_model: str = ""
    """A second ASR model (same choices as model, e.g. 'base') for low-scored clips; empty: off."""
    fallback_below: float = -0.5
    """Clips whose avg_logprob (mean log word probability) is lower, or with no word heard, go to fallback_model."""
    use_subtitles: bool = True
    """Take a clip's text from the source's human subtitles in common.language when their cues fit the clip."""
    subtitle_tolerance_s: float = 0.5
    """Subtitle timing slack: a cue may start or end this far outside the clip and still count as inside."""
    subtitle_min_coverage: float = 0.5
    """The cues inside a clip must cover at least this share of its duration."""
    max_compression_ratio: float = 2.4
    """Hallucination flag 'compression' above this gzip ratio of the text (Whisper's own limit)."""
    max_repeats: int = 2
    """Flag 'repeat' when a phrase is said more often than this in a row (a single word: one more)."""
    max_silence_share: float = 0.8
    """Flag 'silence' on text over a clip with a larger non-speech share (segment's silence_share)."""
    min_chars_per_s: float = 4.0
    """Flag 'too_short' below this many spoken characters per second of speech."""
    max_chars_per_s: float = 30.0
    """Flag 'too_long' above this many spoken characters per second of speech."""


@dataclass(frozen=True)
class BuildDatasetParams:
    val_share: float = 0.1
    """Share of clips held out for validation."""
    min_val_clips: int = 4
    """At least this many validation clips (when there are enough clips)."""
    min_duration_s: float = 0.5
    """Drop clips shorter than this."""
    max_duration_s: float = 15.0
    """Drop clips longer than this."""
    min_words: int = 1
    """Drop clips whose normalised transcript has fewer words."""
    max_words: int = 80
    """Drop clips whose normalised transcript has more words; 0: no limit."""
    max_clipped_share: float = 0.001
    """Drop clips with a larger share of samples at full scale (segment's clipped_share)."""
    min_dnsmos_ovrl: float = 2.5
    """Drop clips whose DNSMOS OVRL (1-5) is lower; clean speech scores about 3.2-3.4. 0: off."""
    drop_speaker_change: bool = True
    """Drop clips in which segment heard two speakers (speaker_change)."""
    min_speaker_similarity: float = 0.75
    """Drop clips less similar (cosine, 0-1) to the target speaker; the same voice scores 0.85-0.95. 0: off."""
    drop_language_mismatch: bool = True
    """Drop clips whose ASR language is not common.language (transcribe's language_mismatch)."""
    drop_hallucinations: bool = True
    """Drop clips whose transcript carries a hallucination flag (transcribe's hallucination)."""
    min_confidence: float = 0.4
    """Drop ASR transcripts with a lower confidence (the geometric mean of the word probabilities, see
    transcribe's `confidence` column). 0: off."""
    rate_iqr_k: float = 1.5
    """Drop clips whose characters per second lie outside q1 - k*IQR .. q3 + k*IQR of their source. 0: off.

    Tukey's 1.5 drops about 0.7% of normally spread clips; on the demo it drops the clip whose
    transcript lost its last words (a text too short for its audio)."""
    rate_min_clips: int = 8
    """A source needs this many clips for a speaking-rate fence; smaller ones are not checked."""
    drop_duplicate_texts: bool = True
    """Keep one clip per text (case and punctuation ignored): the first by clip id."""


@dataclass(frozen=True)
class TrainParams:
    preset: str = "piper-medium"
    """Model size: 'piper-medium' (Piper's medium voices, 16 M parameters), 'piper-low' (the same at 16 kHz),
    'piper-high', 'tiny' (tests) or 'full' (coqui's LJSpeech recipe, from scratch on a GPU)."""
    init_from: str = "joe"
    """Start from: 'joe' (the bundled Piper voice), a Piper voice's .onnx (its .onnx.json beside it), a voice
    folder this pipeline trained (or its model.pth); empty trains from scratch (needs many hours)."""
    epochs: int = 1000
    """Passes over the training clips (whichever of epochs and max_steps ends first)."""
    max_steps: int = 0
    """Stop after this many optimiser steps; 0: no limit."""
    warmup_steps: int = 60
    """From a Piper voice: steps in which only the parts it lacks (posterior encoder, discriminator) learn."""
    batch_size: int = 4
    lr: float = 0.0002
    """Learning rate of the parts that start untrained (and of everything from scratch)."""
    lr_adapt: float = 0.00001
    """Learning rate of the pretrained parts that adapt to the new voice (train.adapt_parts)."""
    adapt_parts: list[str] = dataclasses.field(default_factory=lambda: ["flow"])
    """Pretrained parts that learn after the warm-up: decoder, flow, text_encoder, duration."""
    adversarial_ramp_steps: int = 50
    """After the warm-up, the generator's adversarial loss ramps from 0 to full over these steps."""
    grad_clip: float = 1000.0
    """Clip each side's gradient norm to this (coqui's VITS recipe: 1000); 0: off."""
    grad_accumulation: int = 1
    """Micro-batches of batch_size clips per optimizer step (a bigger effective batch in the same memory)."""
    precision: str = "fp32"
    """'fp32', 'bf16' (CUDA GPUs with bfloat16, or CPUs with AVX-512 BF16/AMX) or 'fp16' (CUDA, loss-scaled)."""
    devices: str | int = "auto"
    """'auto' (every visible CUDA GPU, data-parallel; else the CPU), 'cpu', a count ('2') or CUDA ids ('0,1')."""
    checkpoint_every: int = 0
    """Steps between checkpoints in models/checkpoints (a resumable run; every evaluation is one too); 0: only
    at the end and at evaluations."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept (the best by the listening composite is kept as well)."""
    eval_every: int = 0
    """Steps between evaluations (held-out sentences scored by WER, Distill-MOS, similarity; the best is
    exported, see voicemill/tts/listening.py); 0: none, the last step is exported."""
    eval_sentences: int = 10
    """Validation sentences spoken at each evaluation (the first by id, never trained on)."""
    patience: int = 0
    """Stop early after this many evaluations without a better composite; 0: never (max_steps/epochs limit)."""
    num_threads: int = 2
    """torch CPU threads (shared by the ranks when several CPU processes train)."""


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


#: A float in exponent form without a dot ('5e-06'): YAML 1.1 (PyYAML) reads it as a string.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(value, annotation, where: str):
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # what `dvc exp run -S train.lr=1e-5` writes, and what a user means by it
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


