"""Build an LJSpeech-format dataset from clips and their transcripts.

Layout written into ``out_dir``::

    wavs/<clip_id>.wav       the clips, 16-bit PCM mono at the dataset rate
    metadata.csv             every kept clip: ``id|raw text|normalized text``
    metadata_train.csv       the training split, same format
    metadata_val.csv         the validation split, same format
    manifest.parquet         one row per kept clip (schema "dataset")
    dataset.parquet          the same clips in the Hugging Face audio layout

coqui-tts's ``ljspeech`` formatter reads the third column, so the normalised
text is what the voice learns. The split is seeded and sorted by clip id, so it
does not depend on the order the clips arrive in.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from voicemill import manifest
from voicemill.fsutil import atomic_path
from voicemill.textnorm import normalize

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetOptions:
    language: str = "en"
    seed: int = 1234
    val_share: float = 0.1
    min_val_clips: int = 4
    min_words: int = 1
    min_duration_s: float = 0.5
    max_duration_s: float = 15.0


def clean_for_csv(text: str) -> str:
    """LJSpeech rows are '|'-separated lines: no pipes, no line breaks."""
    return " ".join(text.replace("|", " ").split())


def filter_clips(df: pd.DataFrame, opts: DatasetOptions) -> tuple[pd.DataFrame, Counter]:
    """Apply the filters; returns the kept rows and a count of drops per reason."""
    reasons = pd.Series("", index=df.index)
    words = df["text"].fillna("").str.split().str.len()
    reasons[words < opts.min_words] = "too_few_words"
    reasons[(reasons == "") & (df["duration_s"] < opts.min_duration_s)] = "too_short"
    reasons[(reasons == "") & (df["duration_s"] > opts.max_duration_s)] = "too_long"
    dup = df["normalized"].str.lower().duplicated(keep="first")
    reasons[(reasons == "") & dup] = "duplicate_text"
    dropped = Counter(r for r in reasons if r)
    return df[reasons == ""].copy(), dropped


def split(ids: list[str], opts: DatasetOptions) -> set[str]:
    """Seeded choice of validation ids."""
    ids = sorted(ids)
    n_val = max(opts.min_val_clips, round(len(ids) * opts.val_share))
    n_val = min(n_val, len(ids) // 2)
    return set(random.Random(opts.seed).sample(ids, n_val))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_metadata(path: Path, rows: pd.DataFrame) -> None:
    # id|raw|normalized, e.g. "demo-ep01_0003|It costs $4.|It costs four dollars."
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows.itertuples():
                f.write(f"{r.clip_id}|{clean_for_csv(r.text)}|{clean_for_csv(r.normalized)}\n")


def write_hf_parquet(rows: pd.DataFrame, root: Path, path: Path, batch_rows: int = 64) -> None:
    """The dataset as Parquet in the Hugging Face audio layout (also CoRal's).

    Columns: ``audio`` (struct of ``bytes`` and ``path``), ``text`` (normalised),
    ``raw_text``, ``speaker_id``, ``split``. Loads with
    ``datasets.load_dataset("parquet", data_files=...)`` and goes back into
    voicemill as a Parquet source. Written in row groups, so memory stays small.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("audio", audio_type), ("text", pa.string()), ("raw_text", pa.string()),
                        ("speaker_id", pa.string()), ("split", pa.string())])
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
                    "speaker_id": [str(s or "") for s in speakers.iloc[start : start + batch_rows]],
                    "split": chunk["split"].tolist(),
                }, schema=schema))


def build_dataset(clips: pd.DataFrame, clips_dir: Path, transcripts: pd.DataFrame, out_dir: Path,
                  opts: DatasetOptions) -> dict:
    """Join, normalise, filter, split and write; returns a summary dict."""
    df = clips.merge(transcripts[["clip_id", "text", "language", "confidence"]], on="clip_id", how="inner")
    if df.empty:
        raise ValueError("no clip has a transcript: the clips and transcripts manifests do not match; "
                         "rerun 'dvc repro transcribe'")
    df["normalized"] = [normalize(t or "", opts.language) for t in df["text"]]
    kept, dropped = filter_clips(df, opts)
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} clip(s) left after filtering (dropped: {dict(dropped)}); "
                         "a dataset needs at least 2: add sources or relax the build_dataset filters")
    kept = kept.sort_values("clip_id").reset_index(drop=True)
    val_ids = split(kept["clip_id"].tolist(), opts)
    kept["split"] = ["val" if c in val_ids else "train" for c in kept["clip_id"]]

    wavs = out_dir / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    for r in kept.itertuples():
        _link_or_copy(Path(clips_dir) / r.path, wavs / f"{r.clip_id}.wav")
    kept["wav"] = [f"wavs/{c}.wav" for c in kept["clip_id"]]
    write_metadata(out_dir / "metadata.csv", kept)
    write_metadata(out_dir / "metadata_train.csv", kept[kept["split"] == "train"])
    write_metadata(out_dir / "metadata_val.csv", kept[kept["split"] == "val"])
    manifest.write(kept, out_dir / "manifest.parquet", "dataset")
    write_hf_parquet(kept, out_dir, out_dir / "dataset.parquet")
    return {
        "clips": int(len(kept)),
        "train": int((kept["split"] == "train").sum()),
        "val": int((kept["split"] == "val").sum()),
        "hours": float(kept["duration_s"].sum() / 3600),
        "dropped": dict(dropped),
    }
