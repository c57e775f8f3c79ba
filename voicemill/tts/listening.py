"""Listening to a voice while it trains: held-out sentences, the evaluate stage's scorers, one composite.

VITS losses say little about how a voice sounds (the mel loss of a voice
that has lost its naturalness can be lower than before), so checkpoints are
compared by what a listener would hear. Every ``train.eval_every`` steps the
model speaks a fixed set of validation sentences (the first
``train.eval_sentences`` rows of ``metadata_val.csv`` by id, never trained
on), and each rendering is scored with the scorers of the evaluate stage:

- ``wer``: ASR round trip (``evaluate.asr_model``) against the sentence;
- ``distillmos``: Distill-MOS, 1-5;
- ``similarity``: cosine of the speaker embedding to the centroid of the
  real validation recordings (resemblyzer), 0-1.

The composite that picks the best checkpoint weighs the three equally, each
mapped onto 0-1 with higher better::

    composite = ((distillmos - 1) / 4 + similarity + max(0, 1 - wer)) / 3

Equal weights because each failure alone ruins a voice: a voice nobody
understands, one that sounds broken, and one that is someone else are all
unusable. A step of 0.01 in the composite is, for example, 0.12 Distill-MOS,
0.03 similarity or 3 points of WER.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger(__name__)


def composite(scores: dict) -> float:
    """The documented composite of ``wer``, ``distillmos`` and ``similarity`` (see the module docstring)."""
    mos = (scores["distillmos"] - 1.0) / 4.0
    return float((mos + scores["similarity"] + max(0.0, 1.0 - scores["wer"])) / 3.0)


@dataclass
class Sentence:
    clip_id: str
    text: str  # normalised, as in metadata_val.csv
    ids: list[int]


class Listener:
    """Speaks the evaluation sentences with a model and scores them (models load once, on the CPU)."""

    def __init__(self, dataset_dir: Path, front, language: str, sentences: int = 10, asr_model: str = "tiny.en",
                 num_threads: int = 2, seed: int = 1234):
        from voicemill import scoring
        from voicemill.audio import read_wav
        from voicemill.evaluate import Judges, read_eval_sentences

        rows = read_eval_sentences(dataset_dir, sentences)
        if len(rows) < sentences:
            _LOGGER.warning("train.eval_sentences=%d but the dataset has %d validation clips: evaluating on %d "
                            "(raise build_dataset.min_val_clips for a steadier choice)", sentences, len(rows),
                            len(rows))
        self.sentences = [Sentence(cid, text, front.text_to_ids_normalized(text)) for cid, text in rows]
        self.language, self.seed = language, seed
        self.judges = Judges.load(asr_model, num_threads, language)
        self.speakers, self.distill = self.judges.speakers, self.judges.distill
        self.real = [read_wav(Path(dataset_dir) / "wavs" / f"{s.clip_id}.wav") for s in self.sentences]
        self.real_embeddings = [self.speakers.embed(a, r) for a, r in self.real]
        self.centroid = scoring.mean_embedding(self.real_embeddings)

    def ceiling(self) -> dict:
        """The validation recordings scored as a voice would be: what a perfect clone of them reaches."""
        from voicemill import scoring

        return {"similarity": float(np.mean([scoring.cosine(e, self.centroid) for e in self.real_embeddings])),
                "distillmos": float(np.mean([self.distill(a, r) for a, r in self.real]))}

    def copy_scores(self, model) -> dict:
        """The validation recordings copy-synthesized (posterior -> decoder, ``align.copy_synthesis``) and scored:
        ``copy_similarity`` and ``copy_distillmos``, what the decoder can render of the speaker now."""
        from voicemill import scoring
        from voicemill.tts.align import copy_synthesis

        sims, mos = [], []
        for audio, rate in self.real:
            copied = copy_synthesis(model, audio)
            sims.append(scoring.cosine(self.speakers.embed(copied, rate), self.centroid))
            mos.append(self.distill(copied, rate))
        return {"copy_similarity": float(np.mean(sims)), "copy_distillmos": float(np.mean(mos))}

    def __call__(self, model, sample_rate: int, out_dir: Path | None = None) -> dict:
        """Scores of ``model`` (means over the sentences, plus ``composite``); the WAVs go to ``out_dir``.

        Also returns ``embeddings``, the speaker embeddings of the renderings (those long enough to score), for
        comparing one model's voice with another's."""
        from voicemill import scoring
        from voicemill.audio import write_wav
        from voicemill.tts.coqui import DEFAULT_INFERENCE, synthesize_ids

        t0 = time.monotonic()
        was_training = model.training
        model.eval()
        rng = torch.get_rng_state()
        torch.manual_seed(self.seed)  # the same noise at every evaluation: differences are the model's
        try:
            clips = [(synthesize_ids(model, s.ids, **DEFAULT_INFERENCE), sample_rate) for s in self.sentences]
        finally:
            torch.set_rng_state(rng)
            model.train(was_training)
        if not clips:
            raise VoicemillError("no evaluation sentence: the dataset has no validation clips")
        if out_dir is not None:
            for s, (audio, _) in zip(self.sentences, clips):
                write_wav(Path(out_dir) / f"{s.clip_id}.wav", audio, sample_rate)
        # the renderings heard packed, eight to an ASR window (evaluate.hear), not one window each
        heard = self.judges.listen(clips, [s.text for s in self.sentences])
        rows, embeddings = [], []
        for s, h in zip(self.sentences, heard):
            usable = h["embedding"] is not None
            if usable:
                embeddings.append(h["embedding"])
            rows.append({"clip_id": s.clip_id, "heard": h["heard"], "wer": h["wer"],
                         "distillmos": h["distillmos"] if usable else 1.0,
                         "similarity": scoring.cosine(h["embedding"], self.centroid) if usable else 0.0})
        scores = {k: float(np.mean([r[k] for r in rows])) for k in ("wer", "distillmos", "similarity")}
        scores["composite"] = composite(scores)
        scores["seconds"] = time.monotonic() - t0
        return {"scores": scores, "sentences": rows, "embeddings": embeddings}
