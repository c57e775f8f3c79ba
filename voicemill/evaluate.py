"""Evaluate speech against the real recordings of the same sentences.

:func:`score_sets` scores any set of synthesized clips (a trained voice's, a
checkpoint's, another TTS system's) against held-out real recordings: every
metric is computed for both sides, so each number comes with its reference
(the ``_gt`` keys). :func:`synthesize_set` makes the synthesized side from a
trained voice; :func:`load_set` reads one from a folder of WAVs.

Metrics (the keys of ``metrics/eval.json``):

- ``intelligibility``: ASR round trip (each side's clips transcribed packed,
  eight to a 30 s window: :func:`hear`), both sides normalised with the
  dataset's text normaliser: corpus ``wer``/``cer``, ``wer_mean`` over
  utterances with ``wer_ci95``, ``share_over_50`` (utterances above 50% WER).
- ``quality``: DNSMOS ``dnsmos_{ovrl,sig,bak,p808}`` and ``distillmos``.
- ``speaker``: ``similarity`` (cosine of resemblyzer embeddings against the
  centroid of the real clips; ``similarity_gt`` leaves the clip itself out).
- ``fad.<backend>``: ``value`` (synthesized vs real), ``noise_floor`` (real
  even clips vs real odd clips), and the vector and clip counts used.
- ``clap``: ``available`` (0/1); with a configured model, ``score`` and
  ``score_gt`` (text-audio cosine).
- ``speed``: ``rtf_torch`` (compute seconds per audio second; absent when the
  synthesized side was read from a folder).
- ``validity``: ``failed`` (empty, silent, clipped or absurdly long clips).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voicemill import asr, embeddings, scoring
from voicemill.audio import AudioError, read_wav, write_wav
from voicemill.errors import VoicemillError
from voicemill.params import defaults_from

_LOGGER = logging.getLogger(__name__)

Clip = tuple[np.ndarray, int]


@dataclass(frozen=True)
@defaults_from('evaluate', 'common')
class EvalOptions:
    asr_model: str
    num_threads: int
    fad_backends: list[str]
    clap_model: str
    language: str
    seed: int


@dataclass
class Judges:
    """The scoring models, loaded once and shared by the evaluation and the comparison."""

    recognizer: object
    speakers: scoring.SpeakerEncoder
    distill: scoring.DistillMOS
    language: str

    @classmethod
    def load(cls, asr_model: str, num_threads: int, language: str) -> "Judges":
        return cls(asr.load_model(asr_model, device="cpu", cpu_threads=num_threads), scoring.SpeakerEncoder(),
                   scoring.DistillMOS(), language)

    def listen(self, clips: list[Clip], texts: list[str]) -> list[dict]:
        """What the ASR heard in each clip (:func:`hear`), its WER against the clip's text, Distill-MOS and the
        speaker embedding (None where the clip is unusable)."""
        out = [{"heard": "", "wer": 1.0, "distillmos": float("nan"), "embedding": None} for _ in clips]
        for i, heard in enumerate(hear(self.recognizer, clips, self.language)):
            if heard is not None:
                audio, rate = clips[i]
                out[i] = {"heard": heard, "wer": min(1.0, scoring.wer(texts[i], heard, self.language)),
                          "distillmos": self.distill(audio, rate), "embedding": self.speakers.embed(audio, rate)}
        return out


def usable(audio: np.ndarray, rate: int) -> bool:
    """Long enough (0.1 s) and finite: a clip worth listening to."""
    return audio.size > rate // 10 and bool(np.isfinite(audio).all())


def hear(recognizer, clips: list[Clip], language: str, batch_size: int = 8) -> list[str | None]:
    """What the ASR hears in each clip (None where it is not :func:`usable`). The clips are transcribed
    packed, ``batch_size`` to a 30 s window (``asr.transcribe_clips``, its edges checked), not one window
    each: Whisper pads every input to 30 s, so a few-second clip alone costs a whole window."""
    keep = [i for i, clip in enumerate(clips) if usable(*clip)]
    texts = asr.transcribe_clips(recognizer, [scoring.to_16k(*clips[i]) for i in keep], language,
                                 asr.DecodeOptions(beam_size=5, batch_size=batch_size, initial_prompt="", seed=0))
    out: list[str | None] = [None] * len(clips)
    for i, result in zip(keep, texts):
        out[i] = result["text"]
    return out


def read_eval_sentences(dataset_dir: Path, max_utterances: int) -> list[tuple[str, str]]:
    """(clip_id, normalized text) of the first validation rows, sorted by id: a fixed set."""
    from voicemill.tts.coqui import read_metadata

    path = Path(dataset_dir) / "metadata_val.csv"
    if not path.exists():
        raise VoicemillError(f"{path}: not found; it is written by build_dataset ('dvc repro build_dataset')")
    rows = sorted((cid, norm) for cid, _raw, norm in read_metadata(path))[:max_utterances]
    if not rows:
        raise VoicemillError(f"{path} has no rows: the dataset has no validation clips")
    return rows


def load_set(folder: Path, ids: list[str]) -> dict[str, Clip]:
    """Read ``<folder>/<clip_id>.wav`` for every id; a missing one is named."""
    clips = {}
    for cid in ids:
        path = Path(folder) / f"{cid}.wav"
        if not path.exists():
            raise VoicemillError(f"{path}: missing; the folder must hold one WAV per evaluation sentence, "
                                 f"named by clip id ({', '.join(ids[:3])}...)")
        try:
            clips[cid] = read_wav(path)
        except AudioError as e:
            raise VoicemillError(str(e)) from e
    return clips


def synthesize_set(voice_dir: Path, sentences: list[tuple[str, str]], out_dir: Path, opts: EvalOptions,
                   voice=None):
    """Synthesize every sentence with a trained voice (seeded; ``voice``: already loaded); returns (clips, rtf)."""
    import torch

    from voicemill.tts.coqui import load_voice

    torch.set_num_threads(opts.num_threads)
    voice = voice or load_voice(voice_dir)
    rate = voice.sample_rate
    torch.manual_seed(opts.seed)
    clips, compute_s, audio_s = {}, 0.0, 0.0
    for clip_id, text in tqdm(sentences, desc="synthesize", unit="utt", disable=None):
        t0 = time.perf_counter()
        audio = voice.synthesize(text)
        compute_s += time.perf_counter() - t0
        audio_s += audio.size / rate
        clips[clip_id] = (audio, rate)
        write_wav(Path(out_dir) / f"{clip_id}.wav", audio, rate)
    return clips, compute_s / max(audio_s, 1e-9)


def _mean(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def score_sets(sentences: list[tuple[str, str]], synth: dict[str, Clip], real: dict[str, Clip],
               opts: EvalOptions, judges: Judges | None = None) -> tuple[dict, list[dict]]:
    """Score the synthesized clips and the real ones for the same sentences (``judges``: models already loaded)."""
    judges = judges or Judges.load(opts.asr_model, opts.num_threads, opts.language)
    recognizer, speakers, distill = judges.recognizer, judges.speakers, judges.distill
    real_emb = {cid: speakers.embed(*real[cid]) for cid, _ in sentences}

    per_utt, counts = [], {"": [], "_gt": []}
    # each side packed on its own: the synthesized clips share windows with each other, the real ones likewise
    heard = {tag: dict(zip([cid for cid, _ in sentences], hear(recognizer, [side[cid] for cid, _ in sentences],
                                                                opts.language)))
             for tag, side in (("", synth), ("_gt", real))}
    for clip_id, text in tqdm(sentences, desc="score", unit="utt", disable=None):
        row = {"clip_id": clip_id, "text": text}
        for tag, (audio, rate) in (("", synth[clip_id]), ("_gt", real[clip_id])):
            hyp = heard[tag][clip_id] or ""
            ok = heard[tag][clip_id] is not None
            c = scoring.error_counts(text, hyp, opts.language)
            counts[tag].append(c)
            row[f"asr_text{tag}"] = hyp
            row[f"wer{tag}"] = c["word_errors"] / max(1, c["words"])
            row[f"cer{tag}"] = c["char_errors"] / max(1, c["chars"])
            for k, v in (scoring.dnsmos(audio, rate) if ok else {}).items():
                row[f"{k}{tag}"] = v
            row[f"distillmos{tag}"] = distill(audio, rate) if ok else float("nan")
        others = [e for c, e in real_emb.items() if c != clip_id] or list(real_emb.values())
        centroid = scoring.mean_embedding(others)
        audio, rate = synth[clip_id]
        row["similarity"] = scoring.cosine(speakers.embed(audio, rate), centroid) if audio.size else 0.0
        row["similarity_gt"] = scoring.cosine(real_emb[clip_id], centroid)
        row["duration_s"] = audio.size / rate
        row["duration_s_gt"] = real[clip_id][0].size / real[clip_id][1]
        row["invalid"] = scoring.validity(audio, rate, text)
        per_utt.append(row)

    def corpus(tag: str, kind: str) -> float:
        return sum(c[f"{kind}_errors"] for c in counts[tag]) / max(1, sum(c[f"{kind}s"] for c in counts[tag]))

    def column(key):
        return [r.get(key) for r in per_utt]

    metrics = {
        "n_utterances": len(per_utt),
        "intelligibility": {
            "wer": corpus("", "word"), "wer_gt": corpus("_gt", "word"),
            "cer": corpus("", "char"), "cer_gt": corpus("_gt", "char"),
            "wer_mean": _mean(column("wer")), "wer_ci95": scoring.ci95(column("wer")),
            "share_over_50": float(np.mean([r["wer"] > 0.5 for r in per_utt])),
            "share_over_50_gt": float(np.mean([r["wer_gt"] > 0.5 for r in per_utt])),
        },
        "quality": {},
        "speaker": {"similarity": _mean(column("similarity")), "similarity_gt": _mean(column("similarity_gt")),
                    "similarity_ci95": scoring.ci95(column("similarity"))},
        "fad": {},
        "clap": {"available": 0},
        "validity": {"failed": sum(1 for r in per_utt if r["invalid"])},
    }
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "distillmos"):
        metrics["quality"][key] = _mean(column(key))
        metrics["quality"][f"{key}_gt"] = _mean(column(f"{key}_gt"))
        metrics["quality"][f"{key}_ci95"] = scoring.ci95(column(key))

    ordered_synth = [synth[cid] for cid, _ in sentences]
    ordered_real = [real[cid] for cid, _ in sentences]
    clap = None
    if opts.clap_model:
        clap = embeddings.ClapBackend(opts.clap_model)
        scores = [clap.score(*synth[cid], text) for cid, text in sentences]
        scores_gt = [clap.score(*real[cid], text) for cid, text in sentences]
        for r, s, g in zip(per_utt, scores, scores_gt):
            r["clap"], r["clap_gt"] = s, g
        metrics["clap"] = {"available": 1, "score": _mean(scores), "score_gt": _mean(scores_gt),
                           "score_ci95": scoring.ci95(scores)}
    for name in opts.fad_backends:
        if name == "clap" and clap is None:
            _LOGGER.warning("FAD backend 'clap' skipped: no CLAP model configured (evaluate.clap_model)")
            metrics["fad"]["clap"] = {"available": 0}
            continue
        backend = clap if name == "clap" else embeddings.make_backend(
            name, opts.asr_model, opts.clap_model, opts.num_threads, whisper_model=recognizer,
            speaker_encoder=speakers.encoder)
        metrics["fad"][name] = embeddings.fad_report(backend, ordered_synth, ordered_real)
    return metrics, per_utt
