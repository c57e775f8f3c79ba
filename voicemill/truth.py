"""Compare the clips that segment cut with a source's ground truth.

A ground-truth sidecar (the demo writes one per episode, see
:mod:`voicemill.demo`) lists every sentence with its speaker, its start and
end and the span of each of its words, in seconds of the source. The measures:

``sentences_whole_share``
    Of the sentences no longer than ``max_duration_s``, the share that lies
    whole inside exactly one clip (within ``tolerance_s``).
``boundary_error_median_ms``, ``boundary_error_p95_ms``
    For every clip, the distance from where it detected speech to start
    (``speech_start_s``) to the nearest true start of speech, and likewise for
    the ends. True starts are sentence starts and the first words after a
    pause inside a sentence (at least ``pause_s``; a long sentence is meant
    to be split there); true ends likewise. The clip adds ``padding_ms`` on
    top of these, on purpose.
``cuts_inside_words``
    The share of cut positions (clip starts and ends, padding included) that
    fall strictly inside a word's span.
``speaker_purity``
    Of the clips the dataset will keep on speaker grounds (similarity at least
    ``min_similarity`` and no two-voice flag), the share whose true speech is
    all the target speaker's. Only when the clips carry a similarity.
``target_speech_kept_share``
    The share of the target speaker's speech (sentence time) that lies inside
    those kept clips; also per source (``per_source``).

:func:`truth_counts` does the same for transcripts: WER/CER counts of clip
texts against the sentences they cover. :func:`clip_labels` checks each clip's
own label against the words its audio holds:

``clip_label_exact_share``
    The share of clips whose label, normalised for scoring, is exactly the
    truth words inside the clip (a word is inside when the middle of its
    span is), normalised the same way.
``clip_edge_word_errors``
    Clip edges (first or last word) where the label lacks a word that the
    audio holds or has one that it does not (a word given to the neighbour).
``clip_label_wer``
    Word errors over truth words, clip by clip.

Clips whose truth words have no known text (a partly covered sentence of an
older demo) are counted in ``clip_label_unscored``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

TRUTH_DIR = "truth"


def load_truths(clips_dir: Path) -> dict[str, dict]:
    """The ground-truth sidecars segment copied next to its clips, by source id."""
    folder = Path(clips_dir) / TRUTH_DIR
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def true_boundaries(truth: dict, pause_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Times where speech starts and ends: sentence edges and pauses inside sentences."""
    starts, ends = [], []
    for s in truth["sentences"]:
        starts.append(s["start_s"])
        ends.append(s["end_s"])
        words = s.get("words") or []
        for w0, w1 in zip(words, words[1:]):
            if w1["start_s"] - w0["end_s"] >= pause_s:
                ends.append(w0["end_s"])
                starts.append(w1["start_s"])
    return np.array(sorted(starts)), np.array(sorted(ends))


def _nearest(values: np.ndarray, t: float) -> float:
    return float(np.min(np.abs(values - t))) if values.size else float("nan")


def kept_on_speaker(clips: pd.DataFrame, min_similarity: float) -> pd.Series:
    """Clips the dataset keeps on speaker grounds (the build_dataset filter's rule)."""
    change = clips["speaker_change"].fillna(False).astype(bool) if "speaker_change" in clips else False
    return (clips["speaker_similarity"] >= min_similarity) & ~change


def compare(clips: pd.DataFrame, truths: dict[str, dict], max_duration_s: float,
            min_similarity: float | None = None, tolerance_s: float = 0.02, pause_s: float = 0.15) -> dict:
    """The truth measures over every source that has ground truth (see the module docstring)."""
    clips = clips[clips["source_id"].isin(truths)]
    has_speaker = ("speaker_similarity" in clips and min_similarity is not None
                   and clips["speaker_similarity"].notna().any())
    whole, fitting, errors, cuts, inside = 0, 0, [], 0, 0
    pure, kept_n, target_total, target_kept = 0, 0, 0.0, 0.0
    per_source = {}
    for source_id, truth in truths.items():
        mine = clips[clips["source_id"] == source_id].sort_values("start_s")
        spans = list(zip(mine["start_s"], mine["end_s"]))
        sentences = truth["sentences"]
        src_fit = src_whole = 0
        for s in sentences:
            if s["end_s"] - s["start_s"] > max_duration_s:
                continue
            src_fit += 1
            holders = [1 for a, b in spans if a - tolerance_s <= s["start_s"] and s["end_s"] <= b + tolerance_s]
            src_whole += len(holders) == 1
        fitting += src_fit
        whole += src_whole

        starts, ends = true_boundaries(truth, pause_s)
        s_col = "speech_start_s" if "speech_start_s" in mine else "start_s"
        e_col = "speech_end_s" if "speech_end_s" in mine else "end_s"
        errors += [_nearest(starts, t) for t in mine[s_col]] + [_nearest(ends, t) for t in mine[e_col]]

        words = [(w["start_s"], w["end_s"]) for s in sentences for w in s.get("words") or []]
        for a, b in spans:
            for t in (a, b):
                cuts += 1
                inside += any(w0 < t < w1 for w0, w1 in words)

        per_source[source_id] = {"sentences": len(sentences), "fitting": src_fit, "whole": src_whole,
                                 "clips": len(mine)}
        if has_speaker:
            target = truth.get("target_speaker")
            kept = mine[kept_on_speaker(mine, min_similarity)]
            for a, b in zip(kept["start_s"], kept["end_s"]):
                by_speaker: dict[str, float] = {}
                for s in sentences:
                    by_speaker[s.get("speaker")] = by_speaker.get(s.get("speaker"), 0.0) + _overlap(
                        a, b, s["start_s"], s["end_s"])
                total = sum(by_speaker.values())
                kept_n += 1
                pure += total > 0 and by_speaker.get(target, 0.0) >= 0.99 * total
            src_total, src_kept = _target_seconds(truth, list(zip(kept["start_s"], kept["end_s"])))
            target_total, target_kept = target_total + src_total, target_kept + src_kept
            per_source[source_id]["target_speech_kept_share"] = (round(src_kept / src_total, 4) if src_total
                                                                 else float("nan"))

    errors_ms = np.array(errors) * 1000 if errors else np.array([np.nan])
    report = {
        "sources": len(truths),
        "sentences_fitting": fitting,
        "sentences_whole": whole,
        "sentences_whole_share": round(whole / fitting, 4) if fitting else float("nan"),
        "boundary_error_median_ms": round(float(np.median(errors_ms)), 1),
        "boundary_error_p95_ms": round(float(np.percentile(errors_ms, 95)), 1),
        "cuts": cuts,
        "cuts_inside_words_count": inside,
        "cuts_inside_words": round(inside / cuts, 4) if cuts else 0.0,
    }
    if has_speaker:
        report.update({
            "speaker_min_similarity": min_similarity,
            "speaker_kept_clips": kept_n,
            "speaker_purity": round(pure / kept_n, 4) if kept_n else float("nan"),
            "target_speech_kept_share": round(target_kept / target_total, 4) if target_total else float("nan"),
        })
    report["per_source"] = per_source
    return report


def _target_seconds(truth: dict, spans: list[tuple[float, float]]) -> tuple[float, float]:
    """(the target speaker's sentence time in the source, the part of it inside ``spans``), in seconds."""
    total = kept = 0.0
    for s in truth["sentences"]:
        if s.get("speaker") == truth.get("target_speaker"):
            total += s["end_s"] - s["start_s"]
            kept += sum(_overlap(a, b, s["start_s"], s["end_s"]) for a, b in spans)
    return total, kept


def target_speech_kept(truths: dict[str, dict], clips: pd.DataFrame) -> dict:
    """``target_speech_kept_share`` of ``clips`` (the dataset's: what survived every filter): the share of the
    target speaker's sentence time, over the sources with ground truth that name a target, inside them; NaN
    when none does. A joined clip counts with its span."""
    total = kept = 0.0
    for source_id, truth in truths.items():
        if not truth.get("target_speaker"):
            continue
        mine = clips[clips["source_id"] == source_id]
        t, k = _target_seconds(truth, list(zip(mine["start_s"], mine["end_s"])))
        total, kept = total + t, kept + k
    return {"target_speech_s": round(total, 2), "target_speech_kept_s": round(kept, 2),
            "target_speech_kept_share": round(kept / total, 4) if total else float("nan")}


def truth_counts(truth: dict, clips: list[tuple[float, float, str]], language: str,
                 min_inside: float = 0.5) -> dict:
    """WER/CER counts of one source's clip transcripts against its ground truth.

    ``clips``: (start_s, end_s, text) in the source. The reference is the
    truth sentences covered by clips (more than ``min_inside`` of a sentence's
    time lies inside clips), in order; the hypothesis is the clip texts in
    time order. Both sides go through the scoring normaliser
    (:func:`voicemill.scoring.error_counts`).
    """
    from voicemill.scoring import error_counts

    spans = sorted((a, b) for a, b, _ in clips)
    covered = []
    for s in truth.get("sentences", []):
        length = s["end_s"] - s["start_s"]
        inside = sum(_overlap(a, b, s["start_s"], s["end_s"]) for a, b in spans)
        if length > 0 and inside > min_inside * length:
            covered.append(s["text"])
    hypothesis = " ".join(t for _, _, t in sorted(clips, key=lambda c: c[0]) if t)
    counts = error_counts(" ".join(covered), hypothesis, language)
    return {**counts, "sentences": len(truth.get("sentences", [])), "sentences_covered": len(covered)}


def total_counts(truths: dict[str, dict], clips, language: str) -> dict:
    """:func:`truth_counts` summed over the sources with ground truth.

    ``clips``: a table with ``source_id``, ``start_s``, ``end_s`` and ``text``.
    """
    totals = {"word_errors": 0, "words": 0, "char_errors": 0, "chars": 0, "sentences": 0, "sentences_covered": 0}
    for source_id, t in truths.items():
        mine = clips[clips["source_id"] == source_id]
        counts = truth_counts(t, list(zip(mine["start_s"], mine["end_s"], mine["text"])), language)
        for k in totals:
            totals[k] += counts[k]
    return totals


def clip_reference(truth: dict, start_s: float, end_s: float) -> str | None:
    """The truth text of the words inside [start_s, end_s] (by the middle of each word's span).

    A sentence wholly inside gives its own text; a partly covered one the
    texts of its words inside. None when such a word has no text.
    """
    parts = []
    for s in truth.get("sentences", []):
        words = s.get("words") or []
        inside = [w for w in words if start_s <= (w["start_s"] + w["end_s"]) / 2 <= end_s]
        if not inside:
            continue
        if len(inside) == len(words):
            parts.append(s["text"])
        elif all("text" in w for w in inside):
            parts.append(" ".join(w["text"] for w in inside if w["text"]))
        else:
            return None
    return " ".join(parts)


def clip_labels(truths: dict[str, dict], clips: pd.DataFrame, language: str) -> dict:
    """Each clip's label against the truth words inside it (see the module docstring).

    ``clips``: ``clip_id``, ``source_id``, ``start_s``, ``end_s`` and ``text``.
    """
    from voicemill.scoring import edge_errors, error_counts

    scored = exact = edges = errors = words = unscored = 0
    edge_ids = []
    for clip in clips[clips["source_id"].isin(truths)].itertuples():
        reference = clip_reference(truths[clip.source_id], clip.start_s, clip.end_s)
        if reference is None:
            unscored += 1
            continue
        text = clip.text if isinstance(clip.text, str) else ""
        counts = error_counts(reference, text, language)
        scored += 1
        exact += counts["word_errors"] == 0
        errors += counts["word_errors"]
        words += counts["words"]
        at_edges = sum(edge_errors(reference, text, language))
        edges += at_edges
        if at_edges:
            edge_ids.append(clip.clip_id)
    return {
        "clip_label_clips": scored,
        "clip_label_unscored": unscored,
        "clip_label_exact_share": round(exact / scored, 4) if scored else float("nan"),
        "clip_edge_word_errors": edges,
        "clip_label_wer": round(errors / words, 4) if words else float("nan"),
        "clip_edge_error_ids": edge_ids,
    }
