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
        import yaml

        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(sections))
        return path

    return _write


def ffmpeg_tone(path: Path, seconds: float = 2.0, extra: list[str] | None = None) -> Path:
    """Make a media file with ffmpeg (a 440 Hz tone), any container by suffix."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           *(extra or []), str(path)]
    subprocess.run(cmd, check=True)
    return path
