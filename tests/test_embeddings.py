import numpy as np
import pytest

from tests.tiny_clap import build_tiny_clap
from voicemill import embeddings
from voicemill.errors import VoicemillError

SENTENCES = (
    "Welcome back to the morning show.",
    "The shop closes at six sharp, even in December.",
    "Plant your beans in the first week of May.",
    "Breakfast is included, and the coffee is surprisingly good.",
    "That is all for today.",
    "The conductor has worked on this line for eighteen years.",
    "Membership is twenty-five dollars a year.",
    "Next year the company plans to add a second train.",
)


def test_frechet_distance_math():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert embeddings.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = a + np.array([2.0, 0, 0])
    assert embeddings.frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        embeddings.frechet_distance(a[:1], a)


@pytest.fixture(scope="module")
def speech(piper_voice):
    from voicemill.demo import synthesize

    return [synthesize(piper_voice, s) for s in SENTENCES]


@pytest.mark.machine
@pytest.mark.parametrize("name", ["resemblyzer", "whisper"])
def test_fad_near_floor_for_same_speech_far_for_noise(name, speech, measure):
    backend = embeddings.make_backend(name)
    rng = np.random.default_rng(1)
    noise = [(rng.normal(0, 0.2, a.size).astype(np.float32), r) for a, r in speech]
    # The same voice saying other sentences, against itself, versus noise.
    same = embeddings.fad_report(backend, speech[1::2], speech[0::2])
    far = embeddings.fad_report(backend, noise[1::2], speech[0::2])
    assert same["vectors_synth"] > 2 and same["clips_real"] == 4
    # Measured here: resemblyzer same 0.22, floor 0.30, noise 1.19; whisper same 261, floor 397,
    # noise 560. Frame-level Whisper features separate less, but both order the sets the same way.
    measure("same_over_floor", same["value"] / same["noise_floor"])
    measure("noise_over_same", far["value"] / same["value"])
    assert same["value"] < 1.5 * same["noise_floor"]
    assert far["value"] > 1.8 * same["value"] and far["value"] > far["noise_floor"]


def test_tiny_clap_loads_and_scores(tmp_path, speech):
    model_dir = build_tiny_clap(tmp_path / "clap")
    backend = embeddings.make_backend("clap", clap_model=str(model_dir))
    audio, rate = speech[0]
    score = backend.score(audio, rate, "the voice")
    assert -1.0 <= score <= 1.0
    assert backend.frames(audio, rate).shape == (1, 16)
    assert backend.score(audio, rate, "the voice") == score  # deterministic


def test_clap_without_model_or_with_a_bad_one(tmp_path):
    with pytest.raises(VoicemillError, match="no CLAP model configured"):
        embeddings.make_backend("clap")
    with pytest.raises(VoicemillError, match="could not be loaded"):
        embeddings.make_backend("clap", clap_model=str(tmp_path))
    with pytest.raises(VoicemillError, match="unknown FAD backend"):
        embeddings.make_backend("vggish")
