"""Every param, declared once: type, unit, allowed range, default and doc.

DVC itself checks nothing in ``params.yaml``; a typo there would silently fall
back to a default. So each section of ``params.yaml`` is a dataclass here
whose fields are declared with :func:`opt`, and everything else is derived
from those declarations:

- loading and validation (:func:`load`): an unknown key, a missing key, a
  wrong type, a value out of range or not among the allowed choices fails the
  stage with one line that names the file, the key, the value and what is
  allowed;
- the library's option classes take their defaults from here
  (:func:`defaults_from`), so a default is never written twice;
- each stage's ``--help`` lists the params it reads (:func:`help_text`);
- the README's params table (:func:`markdown_table`; ``python -m
  voicemill.params --readme README.md`` rewrites it);
- the shipped ``params.yaml`` holds exactly these defaults (a test checks it).

The library never reads ``params.yaml`` itself; stages call :func:`load` and
hand the dataclasses (or library options built with :func:`fill`) to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml
from voicemill.errors import VoicemillError
from voicemill.fsutil import read_text_file


class ParamsError(VoicemillError, ValueError):
    """A params section is malformed; the message names the key and the file."""


def opt(default, doc: str, unit: str = "", *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, choices: tuple | None = None,
        zero_off: bool = False):
    """Declare one param: its default, a one-line doc, its unit and what values are allowed.

    ``ge``/``gt``/``le``/``lt`` bound numbers; ``choices`` lists the allowed
    values (for a list param: the allowed items); ``zero_off``: 0 also
    allowed, meaning off, whatever the bounds say.
    """
    meta = {"doc": doc, "unit": unit, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
            "zero_off": zero_off}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=tuple(default): list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class CommonParams:
    sample_rate_hz: int = opt(22050, "sample rate of the clips and of the dataset", "Hz", ge=8000, le=96000)
    language: str = opt("en", "language of the dataset (ISO 639-1): text normalisation and ASR")
    seed: int = opt(1234, "seed for every random choice (demo pauses, split, training)", ge=0)
    executor: str = opt("local", "where segment and transcribe do their work: 'local' (a process pool on this "
                        "machine) or 'ray' (a Ray cluster, see the ray section); the outputs are the same",
                        choices=("local", "ray"))


@dataclass(frozen=True)
class DownloadParams:
    max_failed_share: float = opt(0.5, "fail the stage when more than this share of sources fails", ge=0, le=1)
    timeout_s: float = opt(600.0, "network stall timeout for URL sources", "s", gt=0)
    retries: int = opt(3, "retries of a URL item on network errors, HTTP 429 and 5xx (not on 404)", ge=0, le=20)
    backoff_s: float = opt(2.0, "first wait before a retry; doubled at each further retry", "s", ge=0)
    rate_limit: str = opt("", "download rate limit for URL sources, e.g. '2M' (bytes/s); empty = none")


@dataclass(frozen=True)
class SegmentParams:
    vad_aggressiveness: int = opt(2, "webrtcvad mode, 0 (keeps most) to 3 (keeps least)", ge=0, le=3)
    frame_ms: int = opt(30, "VAD frame length", "ms", choices=(10, 20, 30))
    min_speech_ms: int = opt(60, "shorter runs of speech frames are blips (clicks, coughs), not speech", "ms",
                             ge=0, le=2000)
    min_pause_ms: int = opt(450, "a pause this long ends a speech region (comma pauses run to ~0.4 s)", "ms",
                            ge=30, le=10000)
    energy_gate_db: float = opt(6.0, "frames this close to the local noise floor are pause (noisy sources); "
                                "0 = off", "dB", ge=0, le=60)
    turn_pause_ms: int = opt(120, "inside a region, a pause this long where the voice changes is a cut "
                             "(a guest answering quickly); needs segment.speaker; 0 = off", "ms", ge=0, le=10000)
    turn_change_below: float = opt(0.62, "the voice changes at a pause when the speaker embeddings of the "
                                   "speech either side are less alike (cosine) than this", ge=0, le=1)
    padding_ms: int = opt(150, "audio kept around speech (at most half the pause to a neighbour)", "ms",
                          ge=0, le=2000)
    min_duration_s: float = opt(1.0, "shorter regions are merged with a neighbour or dropped", "s", gt=0)
    max_duration_s: float = opt(12.0, "longer regions are split at their longest inner pause", "s", gt=0, le=60)
    target_lufs: float = opt(-23.0, "integrated loudness of every clip after normalisation", "LUFS",
                             ge=-70, le=0)
    true_peak_dbfs: float = opt(-1.0, "ceiling for the 4x oversampled peak after normalisation", "dBFS",
                                ge=-20, le=0)
    fade_ms: int = opt(10, "fade-in and fade-out of every clip", "ms", ge=0, le=500)
    block_s: float = opt(30.0, "audio decoded and resampled per block; memory does not grow with the source",
                         "s", ge=1, le=3600)
    dnsmos: bool = opt(True, "DNSMOS SIG/BAK/OVRL per clip; off for speed")
    speaker: bool = opt(True, "speaker similarity to the target and the two-voice flag per clip; off for speed")
    speaker_change_below: float = opt(0.75, "flag a clip as two voices when its speaker consistency is below "
                                      "this", ge=0, le=1)
    workers: int = opt(0, "sources segmented in parallel; 0 = one per CPU core", ge=0)

    def __post_init__(self):
        if self.min_duration_s >= self.max_duration_s:
            raise ParamsError(f"segment.min_duration_s ({self.min_duration_s}) must be smaller than "
                              f"segment.max_duration_s ({self.max_duration_s})")


@dataclass(frozen=True)
class TranscribeParams:
    model: str = opt("tiny.en", "'tiny.en' or 'base' (bundled), a local CTranslate2 dir, or a hub name "
                     "(e.g. large-v3)")
    device: str = opt("auto", "'auto' (CUDA when CTranslate2 sees a GPU, else CPU), 'cpu' or 'cuda'",
                      choices=("auto", "cpu", "cuda"))
    compute_type: str = opt("auto", "'auto' (int8 on CPU, float16 on CUDA) or a CTranslate2 compute type")
    beam_size: int = opt(5, "beam search width", ge=1, le=20)
    batch_size: int = opt(8, "clips packed per 30 s Whisper window, and windows per decoder batch; 0 or 1 = "
                          "one call per clip", ge=0, le=256)
    initial_prompt: str = opt("", "context text for every window (spelling, names); empty = none")
    cpu_threads: int = opt(0, "CPU threads for CTranslate2; 0 = let it choose", ge=0)
    language: str = opt("", "'' = decode in common.language; 'auto' = detect each clip's language "
                        "(multilingual models)")
    language_mismatch_probability: float = opt(0.5, "mark language_mismatch when another language is detected "
                                               "with more than this probability", ge=0, le=1)
    fallback_model: str = opt("", "a second ASR model (e.g. base) for low-scored clips; empty = off")
    fallback_below: float = opt(-0.5, "avg_logprob (mean log word probability) below which a clip goes to "
                                "fallback_model", le=0)
    verify_model: str = opt("base", "a second ASR model that must hear the same words as model in every clip "
                            "(spelling, numbers and spaces normalised); label_agrees records it and "
                            "build_dataset.drop_unverified_labels drops the others; empty = off")
    arbitration_margin: float = opt(0.0, "where model and verify_model heard different words, each scores both "
                                    "transcripts on the clip's audio; the one both prefer by at least this much "
                                    "in all (summed log-likelihood margins) is kept, the others stay unverified; "
                                    "0 = off (every disagreement unverified: on the demo tiny.en and base picked "
                                    "the wrong transcript for 8 of the 9 clips they settled)", "nats", ge=0)
    sentence_check_max_pause_s: float = opt(1.5, "neighbouring clips of a source at most this far apart are "
                                            "decoded again together, the pause kept, to hear whether a sentence "
                                            "goes on across it (sentence_goes_on; build_dataset joins them); "
                                            "0 = off", "s", ge=0, le=10)
    use_subtitles: bool = opt(True, "take a clip's text from the source's human subtitles where their cues "
                              "fit the clip")
    subtitle_tolerance_s: float = opt(0.5, "cue timing slack at clip edges", "s", ge=0, le=10)
    subtitle_min_coverage: float = opt(0.5, "share of the clip the cues must cover", ge=0, le=1)
    max_compression_ratio: float = opt(2.4, "hallucination flag above this gzip ratio of the text "
                                       "(Whisper's own limit)", gt=0)
    max_repeats: int = opt(2, "flag a phrase said more often than this in a row (a single word: one more)", ge=1)
    max_silence_share: float = opt(0.8, "flag text on a clip with a larger non-speech share", ge=0, le=1)
    min_chars_per_s: float = opt(4.0, "flag fewer spoken characters per second of speech", "chars/s", ge=0)
    max_chars_per_s: float = opt(30.0, "flag more spoken characters per second of speech", "chars/s", gt=0)


@dataclass(frozen=True)
class BuildDatasetParams:
    val_share: float = opt(0.1, "share of clips held out for validation", ge=0, lt=1)
    min_val_clips: int = opt(10, "at least this many validation clips (train.eval_sentences, "
                             "evaluate.max_utterances)", ge=1)
    min_duration_s: float = opt(0.5, "drop clips shorter than this", "s", ge=0)
    max_duration_s: float = opt(15.0, "drop clips longer than this", "s", gt=0)
    min_words: int = opt(1, "drop clips whose normalised text has fewer words", ge=0)
    max_words: int = opt(80, "drop clips whose normalised text has more words; 0 = no limit", ge=0)
    max_clipped_share: float = opt(0.001, "drop clips with a larger share of samples at full scale", ge=0, le=1)
    max_peak_pileup: float = opt(2.0, "drop clips whose half-cycle peaks pile up at one level more than this "
                                 "(voicemill.audio.peak_pileup): clipping at any level, also after lossy encoding "
                                 "(clean speech of joe and five Kokoro voices <= 1.6, clipped by 9.5 dB or more "
                                 ">= 2.8); 0 = off", ge=0)
    min_dnsmos_ovrl: float = opt(2.5, "drop clips with a lower DNSMOS OVRL (clean speech ~3.2-3.4); 0 = off",
                                 ge=1, le=5, zero_off=True)
    drop_speaker_change: bool = opt(True, "drop clips in which segment heard two voices")
    min_speaker_similarity: float = opt(0.75, "drop clips less similar to the target speaker (the same voice "
                                        "~0.85-0.95); 0 = off", ge=0, le=1)
    drop_language_mismatch: bool = opt(True, "drop clips whose ASR language is not common.language")
    drop_partial_sentences: bool = opt(True, "drop a clip that holds part of a sentence whose other part was "
                                       "dropped (transcribe.sentence_check_max_pause_s finds them)")
    drop_unverified_labels: bool = opt(True, "drop ASR clips on whose words transcribe.model and "
                                       "transcribe.verify_model disagree")
    drop_hallucinations: bool = opt(True, "drop clips whose transcript carries a hallucination flag")
    min_confidence: float = opt(0.4, "drop ASR transcripts with a lower confidence (geometric mean of the word "
                                "probabilities); 0 = off", ge=0, le=1)
    rate_iqr_k: float = opt(1.5, "drop clips whose characters/s lie outside q1 - k*IQR .. q3 + k*IQR of their "
                            "source (Tukey); 0 = off", ge=0)
    rate_min_clips: int = opt(8, "a source needs this many clips for a speaking-rate fence", ge=2)
    drop_duplicate_texts: bool = opt(True, "keep one clip per text (case and punctuation ignored)")
    join_max_pause_s: float = opt(1.0, "join neighbouring kept clips of a source that say one sentence "
                                  "(the first label does not end it, or the next goes on in lower case) when "
                                  "they lie less than this apart and fit max_duration_s; 0 = never", "s", ge=0,
                                  le=10)

    def __post_init__(self):
        if self.min_duration_s >= self.max_duration_s:
            raise ParamsError(f"build_dataset.min_duration_s ({self.min_duration_s}) must be smaller than "
                              f"build_dataset.max_duration_s ({self.max_duration_s})")


#: train.preset's choices (voicemill/tts/presets.py builds them; a test checks the two agree).
PRESET_NAMES = ("piper-medium", "piper-low", "piper-high", "tiny", "full")


@dataclass(frozen=True)
class TrainParams:
    preset: str = opt("piper-medium", "model size: Piper's piper-medium/-low/-high, tiny (tests), full "
                      "(coqui's recipe, from scratch on a GPU)", choices=PRESET_NAMES)
    init_from: str = opt("joe", "joe (the bundled Piper voice), a Piper voice's .onnx, a voice folder train "
                         "wrote; empty = from scratch (needs many hours)")
    epochs: int = opt(1000, "passes over the training clips; whichever of epochs and max_steps ends first",
                      "epochs", ge=1)
    max_steps: int = opt(340, "optimiser steps (align steps included); 0 = no limit. The demo's CPU budget; a "
                         "GPU run: 5000-20000",
                         "steps", ge=0)
    align_steps: int = opt(300, "from a Piper voice: first, cheap steps (a tenth of a VITS step) that regress "
                           "the posterior encoder onto the latents the imported generator renders (counted in "
                           "max_steps). A GPU run: 1000-2000", "steps", ge=0)
    align_lr: float = opt(1e-3, "learning rate of the posterior encoder in the align steps", gt=0, le=1)
    warmup_steps: int = opt(20, "from a Piper voice: after the align steps, steps in which only the duration "
                            "posterior and the discriminator learn, against the frozen voice (a VITS step "
                            "without the generator's backward pass). A GPU run: 500-1000", "steps", ge=0)
    batch_size: int = opt(4, "clips per micro-batch", "clips", ge=1)
    lr: float = opt(2e-4, "learning rate of the parts that start untrained (everything, from scratch)", gt=0, le=1)
    lr_adapt: float = opt(1e-5, "learning rate of the pretrained parts that adapt (adapt_parts)", gt=0, le=1)
    adapt_parts: list[str] = opt(["flow"], "pretrained parts that learn after the warm-up (the decoder costs "
                                 "naturalness, see 'Training a voice'); <part>_scales: only its per-channel gains "
                                 "and biases, at lr_scales",
                                 choices=("flow", "decoder", "text_encoder", "duration", "flow_scales",
                                          "decoder_scales", "text_encoder_scales", "duration_scales"))
    ema_decay: float = opt(0.0, "keep an exponential moving average of the generator's weights from the first "
                           "adapt step, with this decay per step, and listen to and export the average; 0 = off",
                           ge=0, lt=1)
    prior_mel_weight: float = opt(0.0, "weight of a second mel loss on the voice as it speaks (text prior -> reverse "
                                  "flow -> decoder, laid on the recording by the training alignment) beside "
                                  "the posterior's; it trains what listening hears; 0 = off", ge=0, le=10)
    stft_loss_weight: float = opt(0.0, "weight of a multi-resolution STFT loss (spectral convergence + log "
                                  "magnitude at 3 window lengths) on the decoder's output in the adapt phase, "
                                  "beside the mel loss; 0 = off", ge=0, le=100)
    lr_scales: float = opt(1e-3, "learning rate of the <part>_scales in adapt_parts (a few thousand gains and "
                           "biases: they take a larger rate than whole parts)", gt=0, le=1)
    lr_relative: float = opt(0.0, "when > 0, every weight tensor of adapt_parts learns at this share of its own "
                             "size (RMS) instead of lr_adapt / lr_scales: Adam moves each weight by about the rate, "
                             "and imported tensors differ 25-fold in size; 0 = off", ge=0, le=0.1)
    adversarial_ramp_steps: int = opt(50, "after the warm-up, the adversarial loss ramps in over these steps",
                                      "steps", ge=0)
    grad_clip: float = opt(1000.0, "gradient norm limit per side (coqui's VITS recipe); 0 = off", ge=0)
    grad_accumulation: int = opt(1, "micro-batches per optimizer step", ge=1, le=1024)
    precision: str = opt("fp32", "fp32 | bf16 (CUDA, or a CPU with AVX-512 BF16/AMX) | fp16 (CUDA)",
                         choices=("fp32", "bf16", "fp16"))
    devices: str | int = opt("auto", "auto (every visible GPU, data-parallel; else CPU) | cpu | a count (2) | "
                             "CUDA ids ('0,1')")
    checkpoint_every: int = opt(40, "steps between checkpoints to resume from (every evaluation is one too); "
                                "0 = only at evaluations and the end. A GPU run: 500-1000", "steps", ge=0)
    keep_checkpoints: int = opt(1, "newest checkpoints kept, plus the best (piper-medium: 0.74 GB each)", ge=1)
    eval_every: int = opt(10, "steps between listening evaluations (0 = none; the last step is exported). A GPU "
                          "run: 500-1000", "steps", ge=0)
    eval_sentences: int = opt(10, "validation sentences spoken and scored at each evaluation", ge=1)
    patience: int = opt(3, "evaluations without a better composite before an early stop; 0 = never", ge=0)
    num_threads: int = opt(2, "torch CPU threads (shared by the ranks when several CPU processes train)", ge=1)

    def __post_init__(self):
        devices = str(self.devices).strip()
        if not re.fullmatch(r"auto|cpu|[1-9]\d*|\d+(\s*,\s*\d+)+", devices):
            raise ParamsError(f"train.devices: {self.devices!r} is not allowed; expected auto, cpu, a count of GPUs "
                              f"(2) or CUDA ids ('0,1')")


@dataclass(frozen=True)
class EvaluateParams:
    asr_model: str = opt("tiny.en", "ASR for the round trip (also used by train's evaluations); same choices "
                         "as transcribe.model")
    max_utterances: int = opt(10, "validation sentences scored (the first N by id: a fixed set)", ge=1)
    num_threads: int = opt(2, "torch CPU threads", ge=1)
    fad_backends: list[str] = opt(["resemblyzer", "whisper"], "embeddings for the Frechet audio distance "
                                  "(+ clap when clap_model is set)", choices=("resemblyzer", "whisper", "clap"))
    clap_model: str = opt("", "transformers CLAP dir or hub id (e.g. laion/clap-htsat-unfused); empty = "
                          "unavailable")


@dataclass(frozen=True)
class ExportParams:
    max_abs_diff: float = opt(0.05, "fail when ONNX and PyTorch outputs differ by more than this (noise off)",
                              gt=0)
    variants: list[str] = opt(["fp16", "int8"], "smaller variants written beside voice.onnx and measured against "
                              "it (dvc.yaml's export outs name both files of each)", choices=("fp16", "int8"))
    max_wer_increase: float = opt(0.02, "a variant whose round-trip WER is more than this above fp32's cannot be "
                                  "the default (absolute: 0.02 = 2 points)", ge=0, le=1)
    max_mos_drop: float = opt(0.1, "a variant whose Distill-MOS is more than this below fp32's cannot be the "
                              "default", ge=0, le=4)
    max_mel_distance_db: float = opt(0.5, "a variant whose log-mel distance to fp32 (same sentence, noise off) is "
                                     "more than this cannot be the default", "dB", gt=0)
    min_pesq: float = opt(4.0, "a variant whose wide-band PESQ against fp32 (same sentence, noise off, put on "
                          "fp32's time line) is below this cannot be the default (joe: fp16 4.55, int8 3.1)",
                          ge=1, le=4.64)
    min_stoi: float = opt(0.99, "a variant whose STOI against fp32 (as PESQ) is below this cannot be the default "
                          "(joe: fp16 0.9996, int8 0.977)", ge=0, le=1)
    num_threads: int = opt(2, "ONNX Runtime and torch CPU threads; the speeds are measured with this many", ge=1)


@dataclass(frozen=True)
class RayParams:
    address: str = opt("local", "'local' starts a Ray cluster inside the stage; 'auto' joins the cluster "
                       "started on this machine with 'ray start'; 'HOST:6379' or 'ray://HOST:10001' joins that one")
    max_retries: int = opt(3, "times an item is tried again when its worker dies (an item that raises is "
                           "reported, not retried)", ge=0, le=100)
    segment_cpus: float = opt(1.0, "CPUs reserved per segment task (one source)", gt=0)
    transcribe_workers: int = opt(0, "ASR workers (each loads the model once); 0 = as many as the cluster's "
                                  "CPUs (or GPUs, with transcribe_gpus) allow", ge=0)
    transcribe_cpus: float = opt(1.0, "CPUs reserved per ASR worker; also its CTranslate2 threads when "
                                 "transcribe.cpu_threads is 0", gt=0)
    transcribe_gpus: float = opt(0.0, "GPUs per ASR worker, fractional allowed (0.5 = two workers per GPU); "
                                 "0 = CPU workers", ge=0)


SECTIONS: dict[str, type] = {
    "common": CommonParams,
    "download": DownloadParams,
    "segment": SegmentParams,
    "transcribe": TranscribeParams,
    "build_dataset": BuildDatasetParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "export": ExportParams,
    "ray": RayParams,
}

#: Params a stage reads besides common and its own section.
ALSO_READS: dict[str, tuple[str, ...]] = {
    "segment": ("build_dataset.min_speaker_similarity", "build_dataset.max_clipped_share",
                "build_dataset.max_peak_pileup", "ray.address", "ray.max_retries", "ray.segment_cpus"),
    "transcribe": ("ray.address", "ray.max_retries", "ray.transcribe_workers", "ray.transcribe_cpus",
                   "ray.transcribe_gpus"),
    "train": ("evaluate.asr_model",),
    "export": ("evaluate.asr_model",),
}


#: A float in exponent form without a dot ('5e-06'): YAML 1.1 (PyYAML) reads it as a string.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(
        getattr(annotation, "__name__", str(annotation)), str(annotation))


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
        raise ParamsError(f"{where}: expected {_type_name(annotation)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected {_type_name(annotation)}, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, annotation) or (annotation is not bool and isinstance(value, bool)):
        raise ParamsError(f"{where}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")
    if annotation is float and not math.isfinite(value):
        raise ParamsError(f"{where}: expected a finite number, got {value!r}")
    return value


def allowed(field: dataclasses.Field) -> str:
    """What a field allows, in words ('>= 0', '10, 20 or 30', '0 (off) or 1 .. 5'); empty when anything goes."""
    m = field.metadata
    if m.get("choices"):
        names = [str(c) for c in m["choices"]]
        words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"each of {words}" if typing.get_origin(field.type) is list or str(field.type).startswith("list") \
            else words
    lo = f">= {m['ge']:g}" if m.get("ge") is not None else f"> {m['gt']:g}" if m.get("gt") is not None else ""
    hi = f"<= {m['le']:g}" if m.get("le") is not None else f"< {m['lt']:g}" if m.get("lt") is not None else ""
    if lo and hi:
        bounds = f"{lo[3:] if lo.startswith('>=') else lo} .. {hi[3:] if hi.startswith('<=') else hi}"
        bounds = bounds if lo.startswith(">=") and hi.startswith("<=") else f"{lo} and {hi}"
    else:
        bounds = lo or hi
    if m.get("zero_off") and bounds:
        return f"0 (off) or {bounds}"
    return bounds


def _in_range(value, m: dict) -> bool:
    if m.get("zero_off") and value == 0:
        return True
    return not ((m.get("ge") is not None and value < m["ge"]) or (m.get("gt") is not None and value <= m["gt"])
                or (m.get("le") is not None and value > m["le"]) or (m.get("lt") is not None and value >= m["lt"]))


def _check_value(value, field: dataclasses.Field, where: str):
    m = field.metadata
    choices = m.get("choices")
    items = value if isinstance(value, list) else [value]
    if choices is not None:
        bad = [v for v in items if v not in choices]
        if bad:
            raise ParamsError(f"{where}: {bad[0]!r} is not allowed; expected {allowed(field)}")
    numeric = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for v in numeric:
        if not _in_range(v, m):
            unit = f" {m['unit']}" if m.get("unit") else ""
            raise ParamsError(f"{where}: {v!r}{unit} is out of range; expected {allowed(field)}{unit}")
    return value


def _shown(value) -> str:
    """A value as it is written in params.yaml."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _hint(section: str, field: dataclasses.Field) -> str:
    return f"add '{field.name}: {_shown(_default(field))}' under '{section}:' ({describe(field)})"


def _default(field: dataclasses.Field):
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def describe(field: dataclasses.Field) -> str:
    """One line: the doc, the unit and the allowed values."""
    m = field.metadata
    extra = "; ".join(x for x in (m.get("unit") and f"unit: {m['unit']}", allowed(field) and
                                  f"allowed: {allowed(field)}") if x)
    return f"{m.get('doc', '')}" + (f" [{extra}]" if extra else "")


def from_dict(cls: type, data: dict | None, where: str, section: str = "", complete: bool = True):
    """Build section ``cls`` from ``data``: unknown and (when ``complete``) missing keys, wrong types and
    values out of range raise ParamsError naming ``where`` and the key."""
    section = section or next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)
    data = {} if data is None and not complete else data
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys are: {', '.join(sorted(fields))}"
        )
    if complete:
        missing = [f for name, f in fields.items() if name not in data]
        if missing:
            others = ", ".join(f.name for f in missing[1:])
            more = f" (and {len(missing) - 1} more: {others})" if len(missing) > 1 else ""
            raise ParamsError(f"{where}: {section}.{missing[0].name} is missing{more}; {_hint(section, missing[0])}")
    hints = typing.get_type_hints(cls)
    values = {}
    for k, v in data.items():
        key = f"{where}: {section}.{k}"
        values[k] = _check_value(_check_type(v, hints[k], key), fields[k], key)
    try:
        return cls(**values)
    except ParamsError as e:
        raise ParamsError(f"{where}: {e}") from None


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found (run from the repository root or pass --params)")
    text = read_text_file(path, ParamsError, "--params expects a params file such as params.yaml")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_all(path: Path) -> dict:
    """Every section of a params file, checked (see :func:`from_dict`), by name."""
    data = read_yaml(path)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    out = {}
    for name, cls in SECTIONS.items():
        if name not in data:
            raise ParamsError(f"{path}: the section '{name}:' is missing; every section is required "
                              f"(the shipped params.yaml has them all with their defaults)")
        out[name] = from_dict(cls, data[name], str(path), name)
    return out


def load(path: Path, section: str):
    """``common`` and ``section`` of a params file as checked dataclasses (every section is checked)."""
    sections = load_all(path)
    return sections["common"], sections[section]


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


def defaults_from(*sections: str):
    """Class decorator for the library's option classes: fields without a default take the param's.

    Put it under ``@dataclass``. A field is looked up in ``sections`` in order
    (e.g. ``("segment", "common")``); a field found in none must have its own
    default (an option that is not a param).
    """
    fields = [{f.name: f for f in dataclasses.fields(SECTIONS[section])} for section in sections]

    def decorate(cls):
        for name in cls.__dict__.get("__annotations__", {}):
            if name in cls.__dict__:
                continue
            for declared in fields:
                field = declared.get(name)
                if field is not None:
                    default = _default(field)
                    setattr(cls, name, dataclasses.field(default_factory=lambda d=tuple(default): list(d))
                            if isinstance(default, list) else default)
                    break
            else:
                raise TypeError(f"{cls.__name__}.{name}: no default and no param of that name in "
                                f"{', '.join(sections)}")
        return cls
    return decorate


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """A ``--flag`` per field of an option dataclass (``max_chars`` -> ``--max-chars``), help from its declaration.

    For options of a command rather than of the pipeline (``voicemill serve``):
    declared once with :func:`opt`, parsed and checked by :func:`from_arguments`.
    """
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        shown = _shown(_default(f))
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{describe(f)} (default: {shown})")
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                                help=f"{describe(f)} (default: {shown})")


def from_arguments(cls: type, namespace: argparse.Namespace, what: str = "option"):
    """The option dataclass from parsed :func:`add_arguments` flags: types converted, ranges checked."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        raw = getattr(namespace, f.name, None)
        if raw is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(raw, str) and hints[f.name] in (int, float):
            try:
                raw = hints[f.name](raw)
            except ValueError:
                raise ParamsError(f"{flag}: expected {_type_name(hints[f.name])}, got {raw!r}") from None
        values[f.name] = _check_value(_check_type(raw, hints[f.name], flag), f, flag)
    try:
        return cls(**values)
    except ParamsError as e:
        raise ParamsError(f"{what}: {e}") from None


def defaults() -> dict:
    """Every section with its default values, as plain dicts (what the shipped params.yaml holds)."""
    return {name: {f.name: _default(f) for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}


def _rows(section: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for f in dataclasses.fields(SECTIONS[section]):
        shown = _shown(_default(f))
        rows.append((f"{section}.{f.name}", shown if shown != "''" else '""', f.metadata.get("unit", ""),
                     allowed(f), f.metadata["doc"]))
    return rows


def help_text(stage: str) -> str:
    """The params a stage reads, for its ``--help``."""
    names = ["common", stage] if stage in SECTIONS else ["common"]
    lines = [f"Params (params.yaml; each is required, checked on load):"]
    rows = [r for name in names for r in _rows(name)]
    for extra in ALSO_READS.get(stage, ()):
        sec = extra.split(".")[0]
        rows += [r for r in _rows(sec) if r[0] == extra]
    for key, default, unit, rng, doc in rows:
        limits = ", ".join(x for x in (unit, rng) if x)
        lines.append(f"  {key} = {default}" + (f"  ({limits})" if limits else ""))
        lines.append(f"      {doc}")
    return "\n".join(lines)


TABLE_BEGIN = "<!-- params table: generated by `python -m voicemill.params --readme README.md` -->"
TABLE_END = "<!-- end of params table -->"


def markdown_table() -> str:
    """Every param as a Markdown table (the README's)."""
    def cell(s: str) -> str:
        return s.replace("|", "\\|")
    out = ["| key | default | unit | allowed | what |", "|---|---|---|---|---|"]
    for section in SECTIONS:
        for key, default, unit, rng, doc in _rows(section):
            out.append(f"| `{key}` | `{cell(default)}` | {cell(unit)} | {cell(rng)} | {cell(doc)} |")
    return "\n".join(out)


def readme_with_table(text: str) -> str:
    """``text`` with the block between TABLE_BEGIN and TABLE_END replaced by :func:`markdown_table`."""
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ValueError(f"the README has no params table markers ({TABLE_BEGIN} ... {TABLE_END})")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{markdown_table()}\n{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m voicemill.params", description="The params schema: print it, "
                                "check a params file, or rewrite the README's params table.")
    p.add_argument("--readme", help="rewrite the params table in this README")
    p.add_argument("--check", help="load and check every section of this params file")
    args = p.parse_args(argv)
    if args.readme:
        path = Path(args.readme)
        path.write_text(readme_with_table(path.read_text()))
    elif args.check:
        try:
            load_all(Path(args.check))
        except ParamsError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"{args.check}: every section is complete and valid")
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
