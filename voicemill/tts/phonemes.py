"""Piper's phoneme front end: what a voice reads, the same way at training and at synthesis.

Text becomes ids in three steps, each one shared by ``train``, ``evaluate``,
``export`` and ``voicemill speak``:

1. the text normaliser that built the dataset (``voicemill.textnorm``):
   "On 3 May 2024 ... $12.50" becomes "On the third of May twenty
   twenty-four ... twelve dollars and fifty cents";
2. espeak-ng, bundled in piper-tts (no system espeak), in the espeak voice of
   ``common.language`` (:func:`espeak_voice`), giving IPA phonemes split into
   Unicode code points (NFD), as Piper's runtime does;
3. Piper's ``phoneme_id_map``: ``^`` (start), then each phoneme followed by
   ``_`` (pad), then ``$`` (end). A clip of several sentences is one sequence
   (Piper's trainer does the same); Piper's runtime speaks one sentence at a
   time with the same ids per sentence.

The dataset's phonemes are computed once, by build_dataset, and kept beside
it in ``phonemes.csv`` (``id|phonemes|ids``), so what the model was trained on
can be read; ``train`` maps those phonemes through its voice's id map.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path
from voicemill.textnorm import base_language, normalize

_LOGGER = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"
#: espeak-ng voice per language code; a code not listed tries itself, then its base language.
ESPEAK_VOICES = {
    "en": "en-us", "en-us": "en-us", "en-gb": "en-gb-x-rp", "en-uk": "en-gb-x-rp",
    "pt": "pt-br", "pt-br": "pt-br", "pt-pt": "pt",
    "da": "da", "de": "de", "es": "es", "es-419": "es-419", "fr": "fr", "nl": "nl", "sv": "sv", "it": "it",
}
PHONEMES_FILE = "phonemes.csv"
_LOCK = threading.Lock()  # espeak-ng keeps one global voice
_PHONEMIZER = None


class PhonemeError(VoicemillError, ValueError):
    """A language espeak-ng lacks, or a phoneme the voice's id map lacks."""


def default_id_map() -> dict[str, list[int]]:
    """Piper's default espeak phoneme map (256 ids; what Piper's own trainer writes)."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    return {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()}


def _espeak():
    from piper.phonemize_espeak import EspeakPhonemizer

    global _PHONEMIZER
    if _PHONEMIZER is None:
        _PHONEMIZER = EspeakPhonemizer()
    return _PHONEMIZER


def espeak_voice(language: str) -> str:
    """The espeak-ng voice for a language code ("en" -> "en-us", "en-GB" -> "en-gb-x-rp", "pt" -> "pt-br")."""
    code = str(language or "").strip().lower().replace("_", "-")
    candidates = [ESPEAK_VOICES.get(code), code, ESPEAK_VOICES.get(base_language(code)), base_language(code)]
    tried = []
    for voice in dict.fromkeys(c for c in candidates if c):
        tried.append(voice)
        if _voice_exists(voice):
            return voice
    raise PhonemeError(f"common.language {language!r}: espeak-ng (bundled in piper-tts) has no voice "
                       f"{' or '.join(repr(t) for t in tried)}; use a language it speaks, e.g. "
                       f"{', '.join(sorted(set(ESPEAK_VOICES.values())))}")


def _voice_exists(voice: str) -> bool:
    with _LOCK:
        try:
            _espeak().phonemize(voice, "a")
            return True
        except RuntimeError:
            return False


@dataclass(frozen=True)
class FrontEnd:
    """Text -> ids for one language and one id map."""

    language: str
    voice: str
    id_map: dict

    @classmethod
    def create(cls, language: str, id_map: dict | None = None, voice: str | None = None) -> "FrontEnd":
        return cls(language, voice or espeak_voice(language), id_map or default_id_map())

    def phonemes(self, normalized_text: str) -> list[str]:
        """espeak phonemes of already normalised text, all sentences in one list."""
        with _LOCK:
            sentences = _espeak().phonemize(self.voice, normalized_text)
        out: list[str] = []
        for sentence in sentences:
            if out and out[-1] != " ":
                out.append(" ")
            out.extend(sentence)
        return out

    def ids(self, phonemes: list[str]) -> list[int]:
        """Piper's ids: ``^ _ p1 _ p2 _ ... $``; an unknown phoneme raises (Piper would drop it silently)."""
        missing = sorted({p for p in phonemes if p not in self.id_map})
        if missing:
            raise PhonemeError(f"phoneme(s) {', '.join(repr(m) for m in missing)} are not in the voice's "
                               f"phoneme_id_map (espeak voice {self.voice!r})")
        ids = list(self.id_map[BOS]) + list(self.id_map[PAD])
        for p in phonemes:
            ids += list(self.id_map[p]) + list(self.id_map[PAD])
        return ids + list(self.id_map[EOS])

    def text_to_ids(self, text: str) -> list[int]:
        """Raw text (numbers, money, dates) -> normalised -> phonemes -> ids."""
        return self.ids(self.phonemes(normalize(text, self.language)))

    def text_to_ids_normalized(self, normalized_text: str) -> list[int]:
        return self.ids(self.phonemes(normalized_text))


def write_dataset_phonemes(dataset_dir: Path, front: FrontEnd) -> int:
    """Write ``phonemes.csv`` beside ``metadata.csv``: ``id|phonemes|ids`` per clip (build_dataset calls this).

    The first line records the espeak voice and a digest of the texts, so
    ``train`` knows whether the file still describes the dataset. Returns the
    number of clips; a phoneme missing from the id map fails with the clip's id.
    """
    from voicemill.tts.coqui import read_metadata

    dataset_dir = Path(dataset_dir)
    rows = read_metadata(dataset_dir / "metadata.csv")
    buf = io.StringIO()
    buf.write(_header(front.voice, rows) + "\n")
    for clip_id, _raw, text in rows:
        phonemes = front.phonemes(text)
        try:
            ids = front.ids(phonemes)
        except PhonemeError as e:
            raise PhonemeError(f"{dataset_dir / 'metadata.csv'}: clip {clip_id}: {e}") from e
        # id|phonemes|ids; "|" never occurs in espeak output, and each phoneme is one code point
        buf.write(f"{clip_id}|{''.join(phonemes)}|{' '.join(map(str, ids))}\n")
    with atomic_path(dataset_dir / PHONEMES_FILE) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return len(rows)


def dataset_ids(dataset_dir: Path, front: FrontEnd) -> dict[str, list[int]]:
    """Ids per clip id in ``front``'s map, from ``phonemes.csv`` when it matches the dataset and espeak voice.

    Otherwise (an older dataset, another language) the phonemes are computed
    here, in memory: ``train`` never writes into the dataset folder, which is
    build_dataset's output.
    """
    from voicemill.tts.coqui import read_metadata

    dataset_dir = Path(dataset_dir)
    rows = read_metadata(dataset_dir / "metadata.csv")
    path = dataset_dir / PHONEMES_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if lines and lines[0] == _header(front.voice, rows):
        out = {}
        for line in lines[1:]:
            clip_id, phonemes, _ids = line.split("|")
            try:
                out[clip_id] = front.ids(list(phonemes))
            except PhonemeError as e:
                raise PhonemeError(f"{path}: clip {clip_id}: {e}") from e
        return out
    _LOGGER.warning("%s %s; phonemizing the dataset with espeak voice %s in memory", path,
                    "is missing" if not lines else "was made for other texts or another espeak voice", front.voice)
    return {clip_id: front.text_to_ids_normalized(text) for clip_id, _raw, text in rows}


def _header(voice: str, rows) -> str:
    digest = hashlib.sha256("\n".join(f"{i}|{t}" for i, _, t in rows).encode()).hexdigest()[:16]
    return f"# espeak={voice} texts={digest}"
