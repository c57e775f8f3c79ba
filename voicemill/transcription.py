"""Transcription: what is said in every clip, by human subtitles first, else faster-whisper, checked twice.

The transcribe stage (``stages/transcribe.py``) is a thin ``main`` over
:func:`transcribe`; its docstring lists the manifest's columns and the
metrics. Here: the ASR passes run on an executor (:class:`Asr`: language
detection, the model, the fallback model on low-scored clips, the verify
model on every clip), the policy that combines them, and the metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from voicemill import asr, cli, executor, manifest, params, subtitles, truth
from voicemill.audio import AudioError, frame_rms_db, read_wav
from voicemill.fsutil import atomic_dir
from voicemill.scoring import error_counts, to_16k
from voicemill.textnorm import base_language

_LOGGER = logging.getLogger(__name__)

FLAGS = ("repeat", "compression", "silence", "too_long", "too_short")


def estimate_silence_share(samples: np.ndarray, rate: int, below_db: float = 35.0) -> float:
    """Share of 30 ms frames more than ``below_db`` under the loudest: for clips without segment's VAD measure."""
    levels = frame_rms_db(samples, max(1, int(0.03 * rate)))
    return float(np.mean(levels < levels.max() - below_db)) if levels.size else 1.0


def _trims(clips_dir: Path) -> dict[str, float]:
    """Each source's trim start (download's `start:`), from segment's sources.json; 0 when absent."""
    path = clips_dir / "sources.json"
    if not path.exists():
        return {}
    return {s["source_id"]: float(s.get("start_s") or 0.0) for s in json.loads(path.read_text())}


def _subtitle_texts(clips: pd.DataFrame, clips_dir: Path, language: str, opts: params.TranscribeParams) -> dict:
    """clip_id -> subtitle text, for the clips whose source has subtitles in ``language`` that fit them."""
    if not opts.use_subtitles:
        return {}
    folder, trims, texts = clips_dir / subtitles.SUBTITLES_DIR, _trims(clips_dir), {}
    for source_id, group in clips.groupby("source_id"):
        path = subtitles.find(folder, source_id, language)
        if path is None:
            continue
        try:
            cues = subtitles.read_vtt(path)
        except subtitles.SubtitlesError as e:
            _LOGGER.warning("%s; its clips are transcribed by ASR", e)
            continue
        shift = trims.get(source_id, 0.0)
        for clip in group.itertuples():
            text = subtitles.text_for_clip(cues, clip.start_s + shift, clip.end_s + shift,
                                           opts.subtitle_tolerance_s, opts.subtitle_min_coverage)
            if text:
                texts[clip.clip_id] = text
        _LOGGER.info("%s: %d of %d clip(s) take their text from %s", source_id,
                     sum(c in texts for c in group["clip_id"]), len(group), path.name)
    return texts


class Asr:
    """Runs every ASR pass (detection, the model, fallback, verify) on the executor: units of clips,
    each read and decoded by a worker that loaded its model once."""

    def __init__(self, ex: executor.Executor, opts: params.TranscribeParams, ray_opts: params.RayParams,
                 language: str, paths: list[str], durations: list[float]):
        self.ex, self.opts, self.ray, self.language = ex, opts, ray_opts, language
        self.paths, self.durations = paths, durations
        self.errors: dict[int, str] = {}  # clip (by position in paths) -> why a pass failed on it

    def _run(self, model: str, method: str, jobs: list, weights: list[int], desc: str) -> list:
        threads = self.opts.cpu_threads or (max(1, round(self.ray.transcribe_cpus)) if self.ex.name == "ray" else 0)
        factory = functools.partial(asr.Worker, model, self.opts.device, self.opts.compute_type, threads,
                                    self.language)
        return self.ex.on_workers(factory, method, jobs, desc=desc, unit="clip", weights=weights,
                                  cpus=self.ray.transcribe_cpus, gpus=self.ray.transcribe_gpus,
                                  workers=self.ray.transcribe_workers)

    def transcribe(self, model: str, clips: list[int], languages: list[str | None], decode: asr.DecodeOptions,
                   desc: str) -> list[dict | None]:
        """Results for ``clips`` (positions in paths), in order; None where the pass failed on the clip."""
        units = asr.plan_units([self.durations[c] for c in clips], languages, decode.batch_size)
        jobs = [({k: self.paths[clips[k]] for k in u.indices}, u, decode) for u in units]
        out: list[dict | None] = [None] * len(clips)
        for u, (value, error) in zip(units, self._run(model, "decode", jobs, [u.clips for u in units], desc)):
            for k in u.indices:
                if error is None:
                    out[k] = value[k]
                else:
                    self.errors.setdefault(clips[k], f"{desc}: {error}")
        return out

    def score(self, model: str, clips: list[int], texts: list[list[str]], languages: list[str | None],
              desc: str, per_job: int = 8) -> list[list[float] | None]:
        """Each clip's candidate texts scored under ``model`` (``asr.score_texts``), in order; None where the pass
        failed on the clip."""
        chunks = [range(b, min(len(clips), b + per_job)) for b in range(0, len(clips), per_job)]
        jobs = [({k: self.paths[clips[k]] for k in c}, {k: texts[k] for k in c}, {k: languages[k] for k in c})
                for c in chunks]
        out: list[list[float] | None] = [None] * len(clips)
        for chunk, (value, error) in zip(chunks, self._run(model, "score", jobs, [len(c) for c in chunks], desc)):
            for k in chunk:
                if error is None:
                    out[k] = value[k]
                else:
                    _LOGGER.warning("%s: could not score clip %d: %s", desc, clips[k], error)
        return out

    def breaks(self, pairs: list[tuple[int, int, float]], languages: list[str | None], decode: asr.DecodeOptions,
               per_job: int = 8) -> list[str]:
        """For each (clip, next clip, pause between them in the source) whether a sentence ends between them
        (``asr.sentence_break``: "yes", "no", "" when the ASR cannot tell or the pass failed)."""
        chunks = [range(b, min(len(pairs), b + per_job)) for b in range(0, len(pairs), per_job)]
        jobs = [({k: (self.paths[pairs[k][0]], self.paths[pairs[k][1]], pairs[k][2], languages[pairs[k][0]])
                  for k in c}, decode) for c in chunks]
        out = [""] * len(pairs)
        for chunk, (value, error) in zip(chunks, self._run(self.opts.model, "breaks", jobs,
                                                           [len(c) for c in chunks], "sentences")):
            for k in chunk:
                if error is None:
                    out[k] = value[k]
                else:
                    _LOGGER.warning("sentences: could not check the pause after clip %d: %s", pairs[k][0], error)
        return out

    def languages(self, language: str) -> tuple[list[str | None], list[tuple[str, float]]]:
        """Per clip the language to decode in, and per clip (detected language, probability): 1.0 when not
        detected."""
        n = len(self.paths)
        if self.opts.language != "auto":
            decode_as = base_language(language)  # Whisper knows "en", not "en-GB"
            return [decode_as] * n, [(language, 1.0)] * n
        step = max(1, self.opts.batch_size)
        chunks = [range(b, min(n, b + step)) for b in range(0, n, step)]
        jobs = [({i: self.paths[i] for i in chunk}, step) for chunk in chunks]
        detected: list[tuple[str, float]] = [("", 0.0)] * n
        for chunk, (value, error) in zip(chunks, self._run(self.opts.model, "detect", jobs,
                                                           [len(c) for c in chunks], "detect")):
            for i in chunk:
                if error is None:
                    detected[i] = value[i - chunk.start]
                else:
                    self.errors.setdefault(i, f"detect: {error}")
        return [lang or None for lang, _ in detected], detected


def transcribe(clips_dir: Path, out_dir: Path, language: str, opts: params.TranscribeParams,
               seed: int = 1234, ex: executor.Executor | None = None,
               ray_opts: params.RayParams | None = None) -> dict:
    if opts.language not in ("", "auto"):
        raise cli.StageError(f"transcribe.language must be '' (decode in common.language, {language!r}) or 'auto' "
                             f"(detect each clip's language), got {opts.language!r}")
    clips = manifest.read(clips_dir / "manifest.parquet", "clips")
    clips = clips.sort_values(["source_id", "start_s"], kind="stable").reset_index(drop=True)
    subtitle_texts = _subtitle_texts(clips, clips_dir, language, opts)

    paths, durations, kept, failed = [], [], [], []
    for clip in tqdm(clips.itertuples(), total=len(clips), desc="read", unit="clip", disable=None):
        try:
            samples, rate = read_wav(clips_dir / clip.path)
        except AudioError as e:
            _LOGGER.warning("skipped %s: %s", clip.clip_id, e)
            failed.append(clip.clip_id)
            continue
        silence = getattr(clip, "silence_share", None)
        if silence is None or pd.isna(silence):
            silence = estimate_silence_share(samples, rate)
        kept.append((clip, float(silence)))
        if not str(getattr(clip, "source_text", "") or ""):
            # The workers read the clip again; windows are planned on its length at Whisper's rate.
            paths.append(str((clips_dir / clip.path).resolve()))
            durations.append(len(to_16k(samples, rate)) / asr.ASR_RATE)
    if not kept:
        raise cli.StageError(f"no clip in {clips_dir} could be read; rerun 'dvc repro segment'")

    decode = asr.DecodeOptions(beam_size=opts.beam_size, batch_size=opts.batch_size,
                               initial_prompt=opts.initial_prompt, seed=seed)
    results, fallback, verify, sentences = [], {}, {}, {}
    timing = {"asr_s": 0.0, "audio_s": sum(durations)}
    run = Asr(ex or executor.Local(), opts, ray_opts or params.RayParams(), language, paths, durations)
    if paths:
        started = time.perf_counter()
        decode_languages, detected = run.languages(language)
        everything = list(range(len(paths)))
        results = run.transcribe(opts.model, everything, decode_languages, decode, "transcribe")
        for result, (lang, prob) in zip(results, detected):
            if result is not None:
                result["language"], result["language_probability"] = lang, prob
                result["model"] = opts.model
        fallback = _fallback(run, results, decode_languages, decode, opts)
        verify = _verify(run, results, decode_languages, decode, opts)
        asr_clips = [clip for clip, _ in kept if not str(getattr(clip, "source_text", "") or "")]
        sentences = _sentence_breaks(run, results, asr_clips, decode_languages, decode, opts)
        timing["asr_s"] = time.perf_counter() - started
        if len(run.errors) == len(paths):
            raise cli.StageError(f"ASR failed on every clip in {clips_dir}: {next(iter(run.errors.values()))}")
        # A clip on which any pass failed is reported and left out, as an unreadable one is.
        asr_ids = [clip.clip_id for clip, _ in kept if not str(getattr(clip, "source_text", "") or "")]
        for k, error in sorted(run.errors.items()):
            _LOGGER.warning("skipped %s: %s", asr_ids[k], error)
            failed.append(asr_ids[k])
        lost = {asr_ids[k] for k in run.errors}
        kept = [(clip, silence) for clip, silence in kept if clip.clip_id not in lost]
        results = [r for k, r in enumerate(results) if k not in run.errors]

    device, compute_type = asr.pick_device(opts.device, opts.compute_type)
    options = json.dumps({"model": opts.model, "device": device, "compute_type": compute_type,
                          "beam_size": opts.beam_size, "batch_size": opts.batch_size,
                          "initial_prompt": opts.initial_prompt, "language": opts.language or language,
                          "fallback": {"model": opts.fallback_model, "below": opts.fallback_below}
                          if opts.fallback_model else None})
    checks = params.fill(asr.CheckOptions, opts)
    rows, asr_results = [], iter(results)
    for clip, silence in kept:
        source_text = str(getattr(clip, "source_text", "") or "")
        row = {"clip_id": clip.clip_id}
        if source_text:
            # The dataset brought its own transcript for this clip: keep it, no ASR.
            row.update(text=source_text, text_source="dataset", asr_text="", language=language,
                       language_probability=float("nan"), avg_logprob=float("nan"), confidence=float("nan"),
                       no_speech_prob=float("nan"), compression_ratio=float("nan"), words="[]", packed_clips=0,
                       model="", chosen_model="", primary_text="", primary_avg_logprob=float("nan"),
                       fallback_text="", fallback_avg_logprob=float("nan"), edge_check="", verify_text="",
                       label_agrees=None, arbitration="", arbitration_margin=float("nan"), sentence_goes_on="")
        else:
            r = next(asr_results)
            sub = subtitle_texts.get(clip.clip_id)
            row.update(text=sub or r["text"], text_source="subtitles" if sub else "asr", asr_text=r["text"],
                       language=r["language"], language_probability=r["language_probability"],
                       avg_logprob=r["avg_logprob"], confidence=r["confidence"], no_speech_prob=r["no_speech_prob"],
                       compression_ratio=r["compression_ratio"], words=json.dumps(r["words"]),
                       packed_clips=r["packed_clips"], model=opts.model, chosen_model=r["model"],
                       primary_text=r.get("primary_text", r["text"]),
                       primary_avg_logprob=r.get("primary_avg_logprob", r["avg_logprob"]),
                       fallback_text=r.get("fallback_text", ""),
                       fallback_avg_logprob=r.get("fallback_avg_logprob", float("nan")),
                       edge_check=r.get("edge_check", ""), verify_text=r.get("verify_text", ""),
                       label_agrees=None if sub else r.get("label_agrees"),
                       arbitration="" if sub else r.get("arbitration", ""),
                       arbitration_margin=float("nan") if sub else r.get("arbitration_margin", float("nan")),
                       sentence_goes_on=r.get("sentence_goes_on", ""))
        row["language_mismatch"] = row["text_source"] != "dataset" and asr.language_mismatch(
            row["language"], row["language_probability"], language, opts.language_mismatch_probability)
        row["hallucination"] = ",".join(asr.hallucination_flags(row["text"], float(clip.duration_s), silence,
                                                                language, checks))
        row["beam_size"] = opts.beam_size if row["text_source"] != "dataset" else 0
        row["asr_options"] = options if row["text_source"] != "dataset" else ""
        rows.append(row)

    table = pd.DataFrame(rows)
    with atomic_dir(out_dir) as tmp:
        manifest.write(table, tmp / "manifest.parquet", "transcripts")
    summary = metrics(table, clips, truth.load_truths(clips_dir), language)
    summary["failed"] = len(failed)
    summary["fallback"] = {"model": opts.fallback_model, **fallback} if opts.fallback_model else {}
    summary["verify"] = verify
    summary["sentences"] = sentences
    summary["edge"] = {"checked": int((table["edge_check"] != "").sum()),
                       "mended": int((table["edge_check"] == "mended").sum())}
    summary["_timing"] = timing
    return summary


def _sentence_breaks(run: Asr, results, clips: list, languages, decode: asr.DecodeOptions,
                     opts: params.TranscribeParams) -> dict:
    """Where neighbouring clips of a source lie at most transcribe.sentence_check_max_pause_s apart, decode
    the two together with the pause between them and read whether a sentence ends there
    (``asr.sentence_break``); each clip's ``sentence_goes_on`` says it ("" where not checked)."""
    for r in results:
        if r is not None:
            r["sentence_goes_on"] = ""
    if opts.sentence_check_max_pause_s <= 0:
        return {}
    pairs = []
    for k, (a, b) in enumerate(itertools.pairwise(clips)):
        pause = float(b.start_s) - float(a.end_s)
        if (a.source_id == b.source_id and -0.05 <= pause <= opts.sentence_check_max_pause_s
                and results[k] is not None and results[k + 1] is not None):
            pairs.append((k, k + 1, max(0.0, pause)))
    if not pairs:
        return {"checked": 0}
    verdicts = run.breaks(pairs, languages, dataclasses.replace(decode, batch_size=1))
    for (k, _, _), ends in zip(pairs, verdicts):
        results[k]["sentence_goes_on"] = {"yes": "no", "no": "yes"}.get(ends, "")
    goes_on = sum(v == "no" for v in verdicts)
    _LOGGER.info("sentences: %d pause(s) between neighbouring clips checked, a sentence goes on across %d, "
                 "ends at %d, undecided %d", len(pairs), goes_on, sum(v == "yes" for v in verdicts),
                 sum(v == "" for v in verdicts))
    return {"checked": len(pairs), "goes_on": goes_on, "ends": sum(v == "yes" for v in verdicts)}


def _score(result: dict) -> float:
    return result["avg_logprob"] if math.isfinite(result["avg_logprob"]) else -math.inf


def _fallback(run: Asr, results, languages, decode: asr.DecodeOptions, opts: params.TranscribeParams) -> dict:
    """Transcribe the low-scored clips again with transcribe.fallback_model; keep the better-scored result.

    A clip qualifies when its avg_logprob is below transcribe.fallback_below
    or nothing was heard (NaN). Both results are recorded; the fallback's is
    kept when its avg_logprob is higher (log-probabilities of two Whisper
    models are not calibrated against each other, but both are the model's
    own belief in the words it wrote, which is what the choice needs).
    """
    if not opts.fallback_model:
        return {}
    low = [i for i, r in enumerate(results)
           if r is not None and (not math.isfinite(r["avg_logprob"]) or r["avg_logprob"] < opts.fallback_below)]
    if not low:
        return {"tried": 0, "chosen": 0}
    second = run.transcribe(opts.fallback_model, low, [languages[i] for i in low], decode, "fallback")
    chosen = 0
    for i, alt in zip(low, second):
        if alt is None:
            continue
        primary = results[i]
        fallback_fields = {"primary_text": primary["text"], "primary_avg_logprob": primary["avg_logprob"],
                           "fallback_text": alt["text"], "fallback_avg_logprob": alt["avg_logprob"]}
        if _score(alt) > _score(primary):
            chosen += 1
            keep = {k: alt[k] for k in ("text", "avg_logprob", "confidence", "no_speech_prob", "compression_ratio",
                                        "words", "packed_clips")}
            results[i] = {**primary, **keep, "model": opts.fallback_model}
        results[i].update(fallback_fields)
    _LOGGER.info("fallback %s: %d clip(s) below %.2f, its result kept for %d", opts.fallback_model, len(low),
                 opts.fallback_below, chosen)
    return {"tried": len(low), "chosen": chosen}


def _verify(run: Asr, results, languages, decode: asr.DecodeOptions, opts: params.TranscribeParams) -> dict:
    """Transcribe every clip again with transcribe.verify_model; mark where the two models agree, and settle
    where they do not (:func:`arbitrate`).

    Two models rarely mishear a word the same way, so a label both agree on
    (after normalising spelling, numbers and spaces) is very likely what the
    clip says. Where they disagree, each model scores both transcripts on the
    clip's audio; the one both prefer is kept (``arbitration``), and
    build_dataset.drop_unverified_labels drops the clips left undecided.
    """
    if not opts.verify_model:
        return {}
    second = run.transcribe(opts.verify_model, list(range(len(results))), languages, decode, "verify")
    checked = [(k, r, alt) for k, (r, alt) in enumerate(zip(results, second)) if r is not None and alt is not None]
    for k, result, alt in checked:
        result["verify_text"] = alt["text"]
        result["label_agrees"] = asr.same_words(result["text"], alt["text"], languages[k])
        result["arbitration"], result["arbitration_margin"] = "", float("nan")
    agree = sum(r["label_agrees"] for _, r, _ in checked)
    _LOGGER.info("verify %s: the two models agree on %d of %d clip(s)", opts.verify_model, agree, len(checked))
    out = {"model": opts.verify_model, "clips": len(checked), "agree": agree,
           "agree_share": round(agree / len(checked), 4) if checked else None}
    disputed = [(k, r, alt) for k, r, alt in checked if not r["label_agrees"] and r["text"].strip()
                and alt["text"].strip() and run.durations[k] <= asr.SCORE_MAX_S]
    if not opts.arbitration_margin or not disputed:
        return out
    clips = [k for k, _, _ in disputed]
    texts = [[r["text"], alt["text"]] for _, r, alt in disputed]
    langs = [languages[k] for k in clips]
    by_first = run.score(opts.model, clips, texts, langs, "arbitrate")
    by_second = run.score(opts.verify_model, clips, texts, langs, "arbitrate")
    won = {"model": 0, "verify_model": 0, "balanced": 0}
    for (k, result, alt), first, second in zip(disputed, by_first, by_second):
        if first is None or second is None:
            continue
        winner, margin = arbitrate(first, second, opts.arbitration_margin)
        won[winner] += 1
        if winner == "verify_model":  # the verify model's words, timings and scores replace the first's
            result.setdefault("primary_text", result["text"])
            result.setdefault("primary_avg_logprob", result["avg_logprob"])
            result.update({key: alt[key] for key in ("text", "avg_logprob", "confidence", "no_speech_prob",
                                                     "compression_ratio", "words", "packed_clips")},
                          model=opts.verify_model)
        result["arbitration"], result["arbitration_margin"] = winner, margin
    _LOGGER.info("arbitration: of %d disputed clip(s), %d kept %s's words, %d %s's, %d undecided",
                 len(disputed), won["model"], opts.model, won["verify_model"], opts.verify_model, won["balanced"])
    out["arbitration"] = {"disputed": len(disputed), **won}
    return out


def arbitrate(first: list[float], second: list[float], min_margin: float) -> tuple[str, float]:
    """Settle two transcripts (a: transcribe.model's, b: transcribe.verify_model's) of one clip from their
    log-likelihoods under each model (``first`` = [a, b] under transcribe.model, ``second`` under the verify
    model; ``asr.score_texts``).

    A transcript wins when both models prefer it and their two margins add up
    to at least ``min_margin`` nats; otherwise the evidence is balanced.
    Returns ("model" | "verify_model" | "balanced", the summed margin for
    the winner, or its absolute value when balanced).
    """
    d_first, d_second = first[0] - first[1], second[0] - second[1]
    total = d_first + d_second
    if not (math.isfinite(d_first) and math.isfinite(d_second)):
        return "balanced", float("nan")
    if d_first > 0 and d_second > 0 and total >= min_margin:
        return "model", round(total, 3)
    if d_first < 0 and d_second < 0 and -total >= min_margin:
        return "verify_model", round(-total, 3)
    return "balanced", round(abs(total), 3)


def metrics(table: pd.DataFrame, clips: pd.DataFrame, truths: dict, language: str) -> dict:
    """The metrics file's content (see the module docstring)."""
    asr_rows = table[table["text_source"] != "dataset"]
    flags = table["hallucination"].str.split(",")
    out = {
        "clips": len(table),
        "empty": int((table["text"].str.strip() == "").sum()),
        "by_text_source": {s: int((table["text_source"] == s).sum()) for s in ("asr", "subtitles", "dataset")},
        "mean_confidence": round(float(asr_rows["confidence"].mean()), 4) if len(asr_rows) else None,
        "flagged": {"hallucination": int((table["hallucination"] != "").sum()),
                    **{f: int(flags.apply(lambda fs, f=f: f in fs).sum()) for f in FLAGS},
                    "language_mismatch": int(table["language_mismatch"].sum())},
    }
    subs = table[table["text_source"] == "subtitles"]
    if len(subs):
        c = [error_counts(s, a, language) for s, a in zip(subs["text"], subs["asr_text"])]
        out["subtitles"] = {"clips": len(subs), "asr_wer": round(sum(x["word_errors"] for x in c)
                                                                 / max(1, sum(x["words"] for x in c)), 4)}
    if truths:
        labelled = clips.merge(table[["clip_id", "text"]], on="clip_id")
        totals = truth.total_counts(truths, labelled, language)
        out["truth"] = {"wer": round(totals["word_errors"] / max(1, totals["words"]), 4),
                        "cer": round(totals["char_errors"] / max(1, totals["chars"]), 4),
                        "sources": len(truths), **totals, **truth.clip_labels(truths, labelled, language)}
    return out
