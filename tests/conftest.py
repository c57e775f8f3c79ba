"""Shared fixtures: speech made by the bundled Piper voice, with known text and timing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def piper_voice():
    from voicemill.demo import load_voice

    return load_voice(alignments=True)


@pytest.fixture(scope="session")
def short_episode(tmp_path_factory, piper_voice):
    """A 4-sentence episode (WAV + truth sidecar) with one sentence over 12 s."""
    from voicemill.demo import EPISODES, Episode, write_episode

    sentences = (EPISODES[0].sentences[1], EPISODES[0].sentences[2], EPISODES[0].sentences[3],
                 EPISODES[0].sentences[4])
    out = tmp_path_factory.mktemp("episode")
    truth = write_episode(piper_voice, Episode("short", "A short episode", sentences), out, seed=7)
    return out / "short.wav", truth


def write_tts_dataset(root: Path, voice, texts: list[str], n_train: int) -> Path:
    """An LJSpeech dataset of ``texts`` in the joe voice (the first ``n_train`` train, the rest val), with
    phonemes.csv as build_dataset writes it."""
    import numpy as np

    from voicemill.audio import write_wav
    from voicemill.demo import Line, speak
    from voicemill.textnorm import normalize
    from voicemill.tts import phonemes

    (root / "wavs").mkdir(parents=True)
    rows = []
    for k, text in enumerate(texts):
        audio, rate, _ = speak(voice, Line(text))
        write_wav(root / "wavs" / f"c{k:02d}.wav", np.concatenate([np.zeros(2205, np.float32), audio]), rate)
        rows.append(f"c{k:02d}|{text}|{normalize(text, 'en')}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    (root / "metadata_train.csv").write_text("\n".join(rows[:n_train]) + "\n")
    (root / "metadata_val.csv").write_text("\n".join(rows[n_train:]) + "\n")
    assert phonemes.write_dataset_phonemes(root, phonemes.FrontEnd.create("en")) == len(texts)
    return root


@pytest.fixture()
def measure(record_property):
    """Record a value whose size depends on the CPU (an ASR error rate, a MOS, a similarity).

    ``measure(name, value)`` returns the value, so it wraps the assertion's
    operand. The values land in the JUnit XML as test properties;
    ``scripts/portability.py`` collects them from each machine variation and
    prints their spread next to the bounds the tests assert.
    """

    def _measure(name: str, value):
        record_property(name, round(float(value), 4))
        return value

    return _measure


@pytest.fixture()
def write_params(tmp_path):
    """Write a params file from a dict of sections; returns its path."""

    def _write(sections: dict) -> Path:
        return params_file(tmp_path / "params.yaml", sections)

    return _write


def params_file(path: Path, sections: dict) -> Path:
    """Write a complete params file: every default (as shipped) with ``sections`` laid over it."""
    import yaml

    from voicemill.params import defaults

    full = defaults()
    for name, values in sections.items():
        full.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(full))
    return path


def ffmpeg_tone(path: Path, seconds: float = 2.0, extra: list[str] | None = None) -> Path:
    """Make a media file with ffmpeg (a 440 Hz tone), any container by suffix."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           *(extra or []), str(path)]
    subprocess.run(cmd, check=True)
    return path
