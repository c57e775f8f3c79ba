"""Evaluate a trained voice on the validation sentences, next to the real recordings.

Every metric is computed for the synthesized speech and for the held-out real
recordings of the same sentences (the ``_gt`` keys), so each number comes with
its reference point.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from voicemill import asr, scoring
from voicemill.audio import read_wav, write_wav
from voicemill.tts import load_voice, read_metadata, synthesize

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    asr_model: str = "tiny.en"
    max_utterances: int = 6
    num_threads: int = 2
    language: str = "en"
    seed: int = 1234


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def evaluate(voice_dir: Path, dataset_dir: Path, out_dir: Path, opts: EvalOptions) -> tuple[dict, list[dict]]:
    """Synthesize and score; writes the synthesized WAVs into ``out_dir``."""
    torch.set_num_threads(opts.num_threads)
    rows = sorted(read_metadata(Path(dataset_dir) / "metadata_val.csv"))[: opts.max_utterances]
    if not rows:
        raise ValueError(f"{dataset_dir}/metadata_val.csv has no rows; build_dataset writes it")
    model, config = load_voice(voice_dir)
    rate = config.audio.sample_rate
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(opts.seed)
    synth, compute_s, audio_s = {}, 0.0, 0.0
    for clip_id, _raw, text in tqdm(rows, desc="synthesize", unit="utt", disable=None):
        t0 = time.perf_counter()
        audio = synthesize(model, text)
        compute_s += time.perf_counter() - t0
        audio_s += audio.size / rate
        synth[clip_id] = audio
        write_wav(out_dir / f"{clip_id}.wav", audio, rate)

    recognizer = asr.load_model(opts.asr_model, cpu_threads=opts.num_threads)
    speakers = scoring.SpeakerEncoder()
    real = {cid: read_wav(Path(dataset_dir) / "wavs" / f"{cid}.wav") for cid, _, _ in rows}
    real_emb = {cid: speakers.embed(a, r) for cid, (a, r) in real.items()}

    per_utt = []
    for clip_id, _raw, text in tqdm(rows, desc="score", unit="utt", disable=None):
        row = {"clip_id": clip_id, "text": text}
        for tag, (audio, r) in (("", (synth[clip_id], rate)), ("_gt", real[clip_id])):
            hyp = asr.transcribe(recognizer, scoring.to_16k(audio, r), opts.language)["text"] if audio.size else ""
            counts = scoring.error_counts(text, hyp, opts.language)
            row[f"asr_text{tag}"] = hyp
            row[f"wer{tag}"] = counts["word_errors"] / max(1, counts["words"])
            row[f"cer{tag}"] = counts["char_errors"] / max(1, counts["chars"])
            row[f"_counts{tag}"] = counts
            mos = scoring.dnsmos(audio, r) if audio.size > r // 10 else {}
            for k, v in mos.items():
                row[f"{k}{tag}"] = v
        others = [e for c, e in real_emb.items() if c != clip_id] or list(real_emb.values())
        centroid = scoring.mean_embedding(others)
        row["similarity"] = scoring.cosine(speakers.embed(synth[clip_id], rate), centroid) if synth[clip_id].size else 0.0
        row["similarity_gt"] = scoring.cosine(real_emb[clip_id], centroid)
        row["duration_s"] = synth[clip_id].size / rate
        row["invalid"] = scoring.validity(synth[clip_id], rate, text)
        per_utt.append(row)

    def corpus(tag: str, kind: str) -> float:
        errors = sum(r[f"_counts{tag}"][f"{kind}_errors"] for r in per_utt)
        total = sum(r[f"_counts{tag}"][f"{kind}s"] for r in per_utt)
        return errors / max(1, total)

    metrics = {
        "n_utterances": len(per_utt),
        "intelligibility": {
            "wer": corpus("", "word"), "wer_gt": corpus("_gt", "word"),
            "cer": corpus("", "char"), "cer_gt": corpus("_gt", "char"),
            "wer_mean": _mean(r["wer"] for r in per_utt),
        },
        "quality": {k: _mean(r.get(k) for r in per_utt) for k in (
            "dnsmos_ovrl", "dnsmos_ovrl_gt", "dnsmos_sig", "dnsmos_sig_gt", "dnsmos_bak", "dnsmos_bak_gt",
            "dnsmos_p808", "dnsmos_p808_gt")},
        "speaker": {"similarity": _mean(r["similarity"] for r in per_utt),
                    "similarity_gt": _mean(r["similarity_gt"] for r in per_utt)},
        "speed": {"rtf_torch": compute_s / max(audio_s, 1e-9), "threads": opts.num_threads},
        "validity": {"failed": sum(1 for r in per_utt if r["invalid"])},
    }
    for r in per_utt:
        r.pop("_counts"), r.pop("_counts_gt")
    return metrics, per_utt
