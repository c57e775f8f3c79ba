"""Build an LJSpeech-format dataset from clips and their transcripts.

Layout written into ``out_dir``::

    wavs/<clip_id>.wav       the kept clips, 16-bit PCM mono at the dataset rate
    metadata.csv             every kept clip: ``id|raw text|normalized text``
    metadata_train.csv       the training split, same format
    metadata_val.csv         the validation split, same format
    manifest.parquet         one row per KEPT clip (schema "dataset")
    clips_all.parquet        one row per clip, kept or dropped, with its verdict
    dataset.parquet          the kept clips in the Hugging Face audio layout
    README.md                the dataset card (see voicemill/card.py), with
    duration_hist.png        its histograms
    rate_hist.png

coqui-tts's ``ljspeech`` formatter reads the third column, so the normalised
text is what the voice learns. The split is seeded and sorted by clip id, so it
does not depend on the order the clips arrive in.

Filters run in the order of :data:`FILTERS`, and every clip gets a verdict:
``drop_reason`` is the first filter it fails (what the counts count, so they
add up to the clips dropped) and ``drop_reasons`` every filter it fails. The
order puts the cheap and certain checks first (no transcript, length), then
the audio (clipping, DNSMOS), the speaker, the transcript (language, a
second model's agreement, hallucination, ASR confidence); the speaking-rate
fence is computed on the clips that passed all of those, so bad clips do not
widen it; duplicates come last, so the copy that is kept is one that passed
everything else. Kept neighbours that say one sentence are then joined
(:func:`join_sentences`).

A filter whose column is missing (a manifest from an older segment or
transcribe) or was not measured (all NaN: scoring was off) is inactive and says
so; a single clip with NaN passes the filter (it was not measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from voicemill import manifest, truth
from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path, sha256_file
from voicemill.textnorm import ends_sentence, for_scoring, normalize, spoken_chars
from voicemill.params import defaults_from

_LOGGER = logging.getLogger(__name__)


class DatasetError(VoicemillError, ValueError):
    """The dataset cannot be built; the message names the input or param and the fix."""


@dataclass(frozen=True)
@defaults_from('build_dataset', 'common')
class DatasetOptions:
    language: str
    seed: int
    val_share: float
    min_val_clips: int
    min_duration_s: float
    max_duration_s: float
    min_words: int
    max_words: int
    max_clipped_share: float
    max_peak_pileup: float
    min_dnsmos_ovrl: float
    drop_speaker_change: bool
    min_speaker_similarity: float
    drop_language_mismatch: bool
    drop_unverified_labels: bool
    drop_partial_sentences: bool
    drop_hallucinations: bool
    min_confidence: float
    rate_iqr_k: float
    rate_min_clips: int
    drop_duplicate_texts: bool
    join_max_pause_s: float


@dataclass(frozen=True)
class Filter:
    """One filter: the reason it writes, the options it reads, and its check.

    ``check(df, alive, opts)`` returns a boolean Series (True = the clip fails)
    and a status line for the log and the card; ``alive`` marks the clips that
    passed every filter before this one.
    """

    reason: str
    params: tuple[str, ...]
    what: str
    check: Callable[[pd.DataFrame, pd.Series, DatasetOptions], tuple[pd.Series, str]]


def _none(df: pd.DataFrame) -> pd.Series:
    return pd.Series(False, index=df.index)


def _flag(col: pd.Series) -> pd.Series:
    """A bool column that may hold None/NaN (not measured) as plain bools, NaN -> False."""
    return pd.Series(col, dtype="boolean").fillna(False).astype(bool)


def _missing(column: str, manifest_kind: str) -> str:
    stage = manifest.SCHEMAS[manifest_kind][0]
    return (f"inactive: the {manifest_kind} manifest has no {column} column (written by an older {stage}; "
            f"rerun 'dvc repro {stage}')")


def _numeric(df: pd.DataFrame, alive: pd.Series, column: str, fails: Callable[[pd.Series], pd.Series],
             param: str, value: float, off: bool, manifest_kind: str) -> tuple[pd.Series, str]:
    """A threshold on a measured column; NaN (not measured) passes."""
    if off:
        return _none(df), f"off ({param} = {value:g})"
    if column not in df.columns:
        return _none(df), _missing(column, manifest_kind)
    col = pd.to_numeric(df[column], errors="coerce")
    if col.isna().all():
        return _none(df), f"inactive: {column} was not measured (all NaN)"
    status = "active"
    unmeasured = int((col.isna() & alive).sum())
    if unmeasured:
        status += f"; {unmeasured} clip(s) not measured, kept"
    return fails(col).fillna(False).astype(bool), status


def _boolean(df: pd.DataFrame, column: str, flagged: Callable[[pd.Series], pd.Series], param: str,
             on: bool, manifest_kind: str) -> tuple[pd.Series, str]:
    if not on:
        return _none(df), f"off ({param} = false)"
    if column not in df.columns:
        return _none(df), _missing(column, manifest_kind)
    return flagged(df[column]), "active"


def _no_transcript(df, alive, opts):
    return ~df["has_transcript"], "active"


def _too_short(df, alive, opts):
    return df["duration_s"] < opts.min_duration_s, "active"


def _too_long(df, alive, opts):
    return df["duration_s"] > opts.max_duration_s, "active"


def _too_few_words(df, alive, opts):
    return df["n_words"] < opts.min_words, "active"


def _too_many_words(df, alive, opts):
    if opts.max_words <= 0:
        return _none(df), "off (max_words = 0)"
    return df["n_words"] > opts.max_words, "active"


def _clipped(df, alive, opts):
    return _numeric(df, alive, "clipped_share", lambda c: c > opts.max_clipped_share, "max_clipped_share",
                    opts.max_clipped_share, opts.max_clipped_share >= 1, "clips")


def _peak_pileup(df, alive, opts):
    return _numeric(df, alive, "peak_pileup", lambda c: c > opts.max_peak_pileup, "max_peak_pileup",
                    opts.max_peak_pileup, opts.max_peak_pileup <= 0, "clips")


def _low_dnsmos(df, alive, opts):
    return _numeric(df, alive, "dnsmos_ovrl", lambda c: c < opts.min_dnsmos_ovrl, "min_dnsmos_ovrl",
                    opts.min_dnsmos_ovrl, opts.min_dnsmos_ovrl <= 0, "clips")


def _speaker_change(df, alive, opts):
    return _boolean(df, "speaker_change", _flag, "drop_speaker_change", opts.drop_speaker_change, "clips")


def _other_speaker(df, alive, opts):
    return _numeric(df, alive, "speaker_similarity", lambda c: c < opts.min_speaker_similarity,
                    "min_speaker_similarity", opts.min_speaker_similarity, opts.min_speaker_similarity <= 0,
                    "clips")


def _language_mismatch(df, alive, opts):
    return _boolean(df, "language_mismatch", _flag, "drop_language_mismatch", opts.drop_language_mismatch,
                    "transcripts")


def _unverified(df: pd.DataFrame) -> pd.Series:
    """The two ASR models disagreed (label_agrees False) and the arbitration, where it ran, did not settle it."""
    disagree = pd.Series(df["label_agrees"], dtype="boolean").eq(False).fillna(False).astype(bool)
    if "arbitration" in df:
        disagree &= ~df["arbitration"].fillna("").isin(("model", "verify_model"))
    return disagree


def _unverified_label(df, alive, opts):
    return _boolean(df, "label_agrees", lambda c: _unverified(df), "drop_unverified_labels",
                    opts.drop_unverified_labels, "transcripts")


def _partial_sentence(df, alive, opts):
    """Clips that hold part of a sentence whose other part was dropped: chains of neighbouring clips that
    transcribe heard as one sentence (``sentence_goes_on``) and that would fit ``max_duration_s`` joined, with
    a member dropped by an earlier filter. (A chain too long to join keeps its parts: the sentence could
    never be one clip.)"""
    if not opts.drop_partial_sentences:
        return _none(df), "off (drop_partial_sentences = false)"
    if "sentence_goes_on" not in df.columns:
        return _none(df), _missing("sentence_goes_on", "transcripts")
    fails = pd.Series(False, index=df.index)

    def close(chain: list) -> None:
        if len(chain) > 1 and not alive[chain].all():
            if df.at[chain[-1], "end_s"] - df.at[chain[0], "start_s"] <= opts.max_duration_s:
                fails[chain] = alive[chain]

    chain: list = []
    for i in df.sort_values(["source_id", "start_s"], kind="stable").index:
        if chain and df.at[chain[-1], "source_id"] == df.at[i, "source_id"] and \
                str(df.at[chain[-1], "sentence_goes_on"] or "") == "yes":
            chain.append(i)
            continue
        close(chain)
        chain = [i]
    close(chain)
    return fails, "active"


def _hallucination(df, alive, opts):
    return _boolean(df, "hallucination", lambda c: c.fillna("").astype(str).str.strip() != "",
                    "drop_hallucinations", opts.drop_hallucinations, "transcripts")


def _low_confidence(df, alive, opts):
    # A transcript that came with the source (subtitles, a dataset's own text)
    # was not guessed by the ASR: its confidence says nothing about it.
    fails, status = _numeric(df, alive, "confidence", lambda c: c < opts.min_confidence, "min_confidence",
                             opts.min_confidence, opts.min_confidence <= 0, "transcripts")
    if "text_source" in df.columns:
        fails = fails & (df["text_source"].fillna("asr") == "asr")
    return fails, status


def rate_fences(rate: pd.Series, sources: pd.Series, alive: pd.Series, k: float,
                min_clips: int) -> dict[str, tuple[float, float]]:
    """Per source, the IQR fence (q1 - k*IQR, q3 + k*IQR) of the clips still alive.

    A source with fewer than ``min_clips`` such clips gets no fence: quartiles
    of a handful of clips would drop good ones.
    """
    fences = {}
    for source, r in rate[alive].groupby(sources[alive]):
        if len(r) < min_clips:
            continue
        q1, q3 = np.percentile(r.to_numpy(dtype=float), [25, 75])
        fences[source] = (q1 - k * (q3 - q1), q3 + k * (q3 - q1))
    return fences


def _rate_outlier(df, alive, opts):
    if opts.rate_iqr_k <= 0:
        return _none(df), "off (rate_iqr_k = 0)"
    fences = rate_fences(df["chars_per_s"], df["source_id"], alive, opts.rate_iqr_k, opts.rate_min_clips)
    low = df["source_id"].map({s: f[0] for s, f in fences.items()})
    high = df["source_id"].map({s: f[1] for s, f in fences.items()})
    fails = ((df["chars_per_s"] < low) | (df["chars_per_s"] > high)).fillna(False).astype(bool)
    n_sources = df.loc[alive, "source_id"].nunique()
    if not fences:
        return fails, (f"inactive: no source has {opts.rate_min_clips} clips (rate_min_clips) "
                       "for a speaking-rate fence")
    status = f"active for {len(fences)} of {n_sources} source(s)"
    if len(fences) < n_sources:
        status += f"; sources with fewer than {opts.rate_min_clips} clips are not checked"
    return fails, status


def _duplicate_text(df, alive, opts):
    if not opts.drop_duplicate_texts:
        return _none(df), "off (drop_duplicate_texts = false)"
    # Case and punctuation do not make a different sentence; the first clip by
    # id that passed everything else is the one kept.
    # A clip dropped before also gets the reason when its text is kept elsewhere.
    key = df["normalized"].map(lambda t: for_scoring(t, opts.language))
    repeat = key[alive].duplicated(keep="first").reindex(df.index, fill_value=False)
    return repeat | (~alive & key.isin(set(key[alive]))), "active"


#: The filters in the order they are applied (see the module docstring).
FILTERS: tuple[Filter, ...] = (
    Filter("no_transcript", (), "the clip has no transcript (transcribe could not read it)", _no_transcript),
    Filter("too_short", ("min_duration_s",), "clip shorter than min_duration_s", _too_short),
    Filter("too_long", ("max_duration_s",), "clip longer than max_duration_s", _too_long),
    Filter("too_few_words", ("min_words",), "fewer words than min_words in the normalised text", _too_few_words),
    Filter("too_many_words", ("max_words",), "more words than max_words (0: no limit)", _too_many_words),
    Filter("clipped", ("max_clipped_share",), "share of samples at full scale above max_clipped_share",
           _clipped),
    Filter("peak_pileup", ("max_peak_pileup",), "peaks piled up below full scale above max_peak_pileup (clipped, "
           "then turned down or lossily encoded)", _peak_pileup),
    Filter("low_dnsmos", ("min_dnsmos_ovrl",), "DNSMOS OVRL below min_dnsmos_ovrl (noise, distortion)",
           _low_dnsmos),
    Filter("speaker_change", ("drop_speaker_change",), "two speakers inside the clip", _speaker_change),
    Filter("other_speaker", ("min_speaker_similarity",),
           "speaker similarity to the target below min_speaker_similarity", _other_speaker),
    Filter("language_mismatch", ("drop_language_mismatch",), "the ASR heard another language",
           _language_mismatch),
    Filter("unverified_label", ("drop_unverified_labels",),
           "transcribe.verify_model heard other words than transcribe.model, and the arbitration did not "
           "settle it", _unverified_label),
    Filter("hallucination", ("drop_hallucinations",), "the transcript carries a hallucination flag",
           _hallucination),
    Filter("low_confidence", ("min_confidence",), "ASR confidence below min_confidence (ASR transcripts only)",
           _low_confidence),
    Filter("rate_outlier", ("rate_iqr_k", "rate_min_clips"),
           "characters per second outside the source's IQR fence (q1 - k*IQR, q3 + k*IQR)", _rate_outlier),
    Filter("duplicate_text", ("drop_duplicate_texts",), "the same text as a clip already kept",
           _duplicate_text),
    Filter("partial_sentence", ("drop_partial_sentences",), "part of a sentence whose other part was dropped "
           "(transcribe heard the sentence go on across the pause: sentence_goes_on)", _partial_sentence),
)

REASONS: tuple[str, ...] = tuple(f.reason for f in FILTERS)


def clean_for_csv(text: str) -> str:
    """LJSpeech rows are '|'-separated lines: no pipes, no line breaks."""
    return " ".join(text.replace("|", " ").split())


def prepare(clips: pd.DataFrame, transcripts: pd.DataFrame, language: str) -> pd.DataFrame:
    """Every clip joined with its transcript, with normalised text and measures."""
    df = clips.merge(transcripts.assign(has_transcript=True), on="clip_id", how="left",
                     suffixes=("", "_transcript"))
    df["has_transcript"] = _flag(df["has_transcript"])
    df["text"] = df["text"].fillna("").astype(str)
    df["normalized"] = [normalize(t, language) for t in df["text"]]
    df["n_words"] = df["normalized"].str.split().str.len().astype(int)
    # Speaking rate over the speech span when segment measured it (the clip's
    # padding and pauses are not speech), else over the whole clip.
    speech = df["duration_s"].astype(float)
    if {"speech_start_s", "speech_end_s"} <= set(df.columns):
        span = pd.to_numeric(df["speech_end_s"], errors="coerce") - pd.to_numeric(df["speech_start_s"],
                                                                                     errors="coerce")
        speech = span.where(span > 0, speech)
    df["speech_s"] = speech
    df["chars_per_s"] = [spoken_chars(t) / s if s > 0 else 0.0 for t, s in zip(df["normalized"], speech)]
    return df.sort_values("clip_id").reset_index(drop=True)


def filter_clips(df: pd.DataFrame, opts: DatasetOptions) -> tuple[pd.DataFrame, dict[str, str]]:
    """Apply :data:`FILTERS` in order; returns every clip with its verdict and each filter's status.

    Adds ``kept`` (bool), ``drop_reason`` (the first filter failed, "" when
    kept) and ``drop_reasons`` (every filter failed, comma-separated).
    """
    df = df.copy()
    alive = pd.Series(True, index=df.index)
    first = pd.Series("", index=df.index, dtype=object)
    every: list[list[str]] = [[] for _ in range(len(df))]
    statuses = {}
    for f in FILTERS:
        fails, status = f.check(df, alive, opts)
        fails = fails.astype(bool)
        statuses[f.reason] = status
        first[alive & fails] = f.reason
        for i in np.flatnonzero(fails.to_numpy()):
            every[i].append(f.reason)
        alive &= ~fails
    df["kept"] = alive
    df["drop_reason"] = first
    df["drop_reasons"] = [",".join(r) for r in every]
    return df, statuses


def drop_counts(clips: pd.DataFrame) -> dict[str, int]:
    """Clips dropped per first reason, every reason present (0 when none)."""
    counts = Counter(clips.loc[~clips["kept"], "drop_reason"])
    return {r: int(counts.get(r, 0)) for r in REASONS}


def minutes_by_speaker(clips: pd.DataFrame) -> dict[str, dict]:
    """Per speaker (the sources' ``speaker``; "" when none is named) the minutes segment cut, the minutes kept
    and the minutes lost per first drop reason (only the reasons that lost any), rounded to 0.01 min."""
    speakers = clips["speaker"].fillna("").astype(str) if "speaker" in clips else pd.Series("", index=clips.index)
    out = {}
    for speaker, mine in clips.groupby(speakers, sort=True):
        minutes = mine["duration_s"].astype(float) / 60
        lost = minutes[~mine["kept"]].groupby(mine.loc[~mine["kept"], "drop_reason"]).sum()
        out[str(speaker)] = {"segmented_min": round(float(minutes.sum()), 2),
                             "kept_min": round(float(minutes[mine["kept"]].sum()), 2),
                             "lost_min": {r: round(float(lost[r]), 2) for r in REASONS if lost.get(r, 0) > 0}}
    return out




def _continues(text: str) -> bool:
    """Whether a label reads as the rest of a sentence: it starts with a lower-case letter."""
    first = next((c for c in text.strip() if c.isalpha()), "")
    return first.islower()


def _goes_on(prev, row, opts: DatasetOptions) -> bool:
    """Whether the sentence of clip ``prev`` goes on into the next clip ``row``: as transcribe heard the two
    together (``sentence_goes_on``), else from the labels, within ``join_max_pause_s``."""
    heard = str(prev.get("sentence_goes_on", "") or "")
    if heard in ("yes", "no"):
        return heard == "yes"
    return (row.start_s - prev["end_s"] <= opts.join_max_pause_s
            and (not ends_sentence(prev["text"]) or _continues(row.text)))


def join_sentences(kept: pd.DataFrame, opts: DatasetOptions) -> pd.DataFrame:
    """Neighbouring kept clips of one source that say one sentence together, joined into one clip.

    Segment cuts at pauses, and a long comma pause inside a sentence is a
    pause. Where transcribe decoded the two clips together with the pause
    (``sentence_goes_on``), that decides; else the labels tell: clip A's
    label does not end a sentence (no final . ! ?), or clip B's starts in
    lower case, and the two lie less than ``join_max_pause_s`` apart. Joined
    when the whole fits ``max_duration_s``. A joined clip's id is the
    first's with the last one's number (``src_0009_0010``), ``joined`` lists
    the clips in it, and its audio is theirs with the gap between them as
    silence (see :func:`write_joined`). A mid-sentence full stop that the
    ASR put at A's end becomes a comma.
    """
    kept = kept.sort_values(["source_id", "start_s"], kind="stable").reset_index(drop=True)
    kept["joined"] = ""
    if opts.join_max_pause_s <= 0 or kept.empty:
        return kept
    groups: list[list[int]] = []
    for i, row in enumerate(kept.itertuples()):
        if groups:
            prev = kept.loc[groups[-1][-1]]
            first = kept.loc[groups[-1][0]]
            if (prev["source_id"] == row.source_id and row.end_s - first["start_s"] <= opts.max_duration_s
                    and _goes_on(prev, row, opts)):
                groups[-1].append(i)
                continue
        groups.append([i])
    rows = []
    for group in groups:
        if len(group) == 1:
            rows.append(kept.loc[group[0]].to_dict())
            continue
        parts = kept.loc[group]
        texts = [str(t).strip() for t in parts["text"]]
        texts = [t[:-1] + "," if k + 1 < len(texts) and t.endswith((".", "!", "?")) else t
                 for k, t in enumerate(texts)]
        row = parts.iloc[0].to_dict()
        offsets = (parts["start_s"] - row["start_s"]).tolist()
        words = []
        for offset, w in zip(offsets, parts["words"] if "words" in parts else []):
            words += [{**x, "start_s": round(x["start_s"] + offset, 3), "end_s": round(x["end_s"] + offset, 3)}
                      for x in json.loads(w or "[]")]
        last = parts.iloc[-1]
        text = " ".join(texts)
        normalized = normalize(text, opts.language)
        speech_s = float(parts["speech_s"].sum())
        row.update({
            "clip_id": f"{row['clip_id']}_{str(last['clip_id']).rsplit('_', 1)[-1]}",
            "end_s": last["end_s"], "speech_end_s": last.get("speech_end_s", row.get("speech_end_s")),
            "duration_s": round(float(last["end_s"] - row["start_s"]), 3),
            "text": text, "normalized": normalized, "n_words": len(normalized.split()),
            "speech_s": speech_s, "chars_per_s": spoken_chars(normalized) / speech_s if speech_s > 0 else 0.0,
            "joined": json.dumps(parts["clip_id"].tolist()),
            **({"words": json.dumps(words)} if "words" in parts else {}),
        })
        rows.append(row)
    return pd.DataFrame(rows, columns=kept.columns)


def write_joined(row, clips: pd.DataFrame, clips_dir: Path, path: Path) -> None:
    """A joined clip's audio: its clips in order, with the gaps between them in the source as silence."""
    from voicemill.audio import read_wav, write_wav

    parts = clips.set_index("clip_id").loc[json.loads(row.joined)]
    audio, rate, position = [], None, None
    for part in parts.itertuples():
        samples, rate = read_wav(Path(clips_dir) / part.path)
        if position is not None:
            audio.append(np.zeros(max(0, round((part.start_s - position) * rate)), dtype=np.float32))
        audio.append(samples)
        position = part.end_s
    write_wav(path, np.concatenate(audio), rate)


def split(ids: list[str], opts: DatasetOptions) -> set[str]:
    """Seeded choice of validation ids."""
    ids = sorted(ids)
    n_val = max(opts.min_val_clips, round(len(ids) * opts.val_share))
    n_val = min(n_val, len(ids) // 2)
    return set(random.Random(opts.seed).sample(ids, n_val))


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise DatasetError(f"{src}: clip listed in the clips manifest is missing; rerun 'dvc repro segment'")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fingerprint(rows: pd.DataFrame, root: Path) -> str:
    """sha256 over the kept clips sorted by id: id, split, normalised text, audio sha256.

    Equal fingerprints mean the same audio with the same texts in the same
    split, so two runs (or two machines) compare at a glance.
    """
    h = hashlib.sha256()
    for r in rows.sort_values("clip_id").itertuples():
        h.update(f"{r.clip_id}\t{r.split}\t{r.normalized}\t{sha256_file(Path(root) / r.wav)}\n".encode())
    return h.hexdigest()


def write_metadata(path: Path, rows: pd.DataFrame) -> None:
    # id|raw|normalized, e.g. "demo-ep01_0003|It costs $4.|It costs four dollars."
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows.itertuples():
                f.write(f"{r.clip_id}|{clean_for_csv(r.text)}|{clean_for_csv(r.normalized)}\n")


def write_hf_parquet(rows: pd.DataFrame, root: Path, path: Path, batch_rows: int = 64) -> None:
    """The dataset as Parquet in the Hugging Face audio layout (also CoRal's).

    Columns: ``audio`` (struct of ``bytes`` and ``path``), ``text`` (normalised),
    ``raw_text``, ``speaker_id``, ``split``. The schema carries the Hugging Face
    features (``audio`` is an ``Audio`` feature at the clips' rate), so
    ``datasets.load_dataset("parquet", data_files=...)`` decodes the audio; it
    also goes back into voicemill as a Parquet source. Written in row groups,
    so memory stays small.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rates = set(rows["sample_rate"]) if "sample_rate" in rows else set()
    audio_feature = {"_type": "Audio"}
    if len(rates) == 1:
        audio_feature["sampling_rate"] = int(next(iter(rates)))
    string = {"dtype": "string", "_type": "Value"}
    features = {"audio": audio_feature, "text": string, "raw_text": string, "speaker_id": string, "split": string}
    schema = pa.schema([("audio", audio_type), ("text", pa.string()), ("raw_text", pa.string()),
                        ("speaker_id", pa.string()), ("split", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    speakers = rows["speaker"] if "speaker" in rows else pd.Series("", index=rows.index)
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(rows), batch_rows):
                chunk = rows.iloc[start : start + batch_rows]
                writer.write_table(pa.table({
                    "audio": pa.array([{"bytes": (root / w).read_bytes(), "path": Path(w).name} for w in chunk["wav"]],
                                      type=audio_type),
                    "text": chunk["normalized"].tolist(),
                    "raw_text": chunk["text"].tolist(),
                    "speaker_id": [str(s) if isinstance(s, str) else "" for s in
                                   speakers.iloc[start : start + batch_rows]],
                    "split": chunk["split"].tolist(),
                }, schema=schema))


PLOT_COLUMNS = ("clip_id", "source_id", "duration_s", "speech_s", "chars_per_s", "n_words", "kept", "drop_reason")


def write_plot_data(clips: pd.DataFrame, path: Path) -> None:
    """Per-clip CSV for ``dvc plots``: duration, speaking rate and verdict of every clip."""
    table = clips[list(PLOT_COLUMNS)].copy()
    table["kept"] = table["kept"].astype(int)
    table["duration_s"] = table["duration_s"].round(3)
    table["speech_s"] = table["speech_s"].round(3)
    table["chars_per_s"] = table["chars_per_s"].round(3)
    with atomic_path(Path(path)) as tmp:
        table.to_csv(tmp, index=False)


@dataclass
class BuildResult:
    summary: dict
    """The metrics (metrics/dataset.json)."""
    clips: pd.DataFrame
    """Every clip with its measures and verdict (clips_all.parquet)."""
    statuses: dict[str, str]
    """Each filter's status: active, off, or inactive and why."""


def build_dataset(clips: pd.DataFrame, clips_dir: Path, transcripts: pd.DataFrame, out_dir: Path,
                  opts: DatasetOptions, sources: pd.DataFrame | None = None) -> BuildResult:
    """Join, normalise, filter, split and write the dataset and its card.

    ``sources`` (the download manifest, optional) adds titles, speakers and
    licenses to the card and speaker ids to ``dataset.parquet``.
    """
    from voicemill import card

    out_dir = Path(out_dir)
    df = prepare(clips, transcripts, opts.language)
    if not df["has_transcript"].any():
        raise DatasetError("no clip has a transcript: the clips and transcripts manifests do not match; "
                           "rerun 'dvc repro transcribe'")
    if sources is not None and "speaker" in sources.columns and "speaker" not in df.columns:
        df = df.merge(sources[["source_id", "speaker"]].drop_duplicates("source_id"), on="source_id", how="left")
    df, statuses = filter_clips(df, opts)
    for reason, status in statuses.items():
        if status.startswith("inactive"):
            _LOGGER.warning("filter %s is %s", reason, status)
        else:
            _LOGGER.debug("filter %s: %s", reason, status)
    dropped = drop_counts(df)
    kept = df[df["kept"]].copy()
    if len(kept) >= 2:
        kept = join_sentences(kept, opts)
    if len(kept) < 2:
        worst = max(dropped, key=dropped.get)
        names = next(f.params for f in FILTERS if f.reason == worst)
        knob = ", ".join(f"build_dataset.{n} = {getattr(opts, n)}" for n in names) or "no param"
        raise DatasetError(f"only {len(kept)} of {len(df)} clip(s) left after filtering, most dropped as {worst} "
                           f"({knob}; all drops: { {r: n for r, n in dropped.items() if n} }); a dataset needs "
                           "at least 2: add sources or relax that build_dataset param")
    val_ids = split(kept["clip_id"].tolist(), opts)
    kept["split"] = ["val" if c in val_ids else "train" for c in kept["clip_id"]]
    kept["wav"] = [f"wavs/{c}.wav" for c in kept["clip_id"]]
    # A clip joined into another is listed under the joined clip's split and file.
    member = {c: r.clip_id for r in kept.itertuples() if r.joined for c in json.loads(r.joined)}
    owner = df["clip_id"].map(lambda c: member.get(c, c))
    df["split"] = owner.map(kept.set_index("clip_id")["split"]).fillna("")
    df["wav"] = owner.map(kept.set_index("clip_id")["wav"]).fillna("")
    df["joined_into"] = df["clip_id"].map(lambda c: member.get(c, ""))

    wavs = out_dir / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    for r in kept.itertuples():
        if r.joined:
            write_joined(r, df, clips_dir, out_dir / r.wav)
        else:
            _link_or_copy(Path(clips_dir) / r.path, out_dir / r.wav)
    write_metadata(out_dir / "metadata.csv", kept)
    write_metadata(out_dir / "metadata_train.csv", kept[kept["split"] == "train"])
    write_metadata(out_dir / "metadata_val.csv", kept[kept["split"] == "val"])
    manifest.write(kept.drop(columns=["kept", "drop_reason", "drop_reasons", "has_transcript"]),
                   out_dir / "manifest.parquet", "dataset")
    manifest.write_table(df, out_dir / "clips_all.parquet")
    write_hf_parquet(kept, out_dir, out_dir / "dataset.parquet")

    summary = {
        "clips": int(len(kept)),
        "joined": int((kept["joined"] != "").sum()),
        "train": int((kept["split"] == "train").sum()),
        "val": int((kept["split"] == "val").sum()),
        "hours": round(float(kept["duration_s"].sum() / 3600), 6),
        "clips_in": int(len(df)),
        "dropped": dropped,
        "minutes": minutes_by_speaker(df),
        "duration_s_median": round(float(kept["duration_s"].median()), 3),
        "chars_per_s_median": round(float(kept["chars_per_s"].median()), 3),
        "fingerprint": fingerprint(kept, out_dir),
    }
    truths = truth.load_truths(clips_dir)
    if truths:
        summary["truth"] = {**truth.clip_labels(truths, kept, opts.language),
                            **truth.target_speech_kept(truths, kept)}
    card.write_card(out_dir, df, summary, statuses, opts, sources)
    return BuildResult(summary, df, statuses)
