"""Parquet manifests passed between stages, with their schemas checked.

Each stage writes one manifest next to its outputs and validates it before
writing; the stage that reads it checks the columns it needs and names the
stage that writes it, so a stale or foreign file fails with the fix.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from voicemill.fsutil import atomic_path
from voicemill.errors import VoicemillError

#: Required columns per manifest kind, and the stage that writes it.
SCHEMAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sources": ("download", ("source_id", "kind", "origin", "title", "channel", "upload_date", "license",
                             "audio_path", "duration_s", "sha256", "downloaded_at")),
    "clips": ("segment", ("clip_id", "source_id", "path", "start_s", "end_s", "speech_start_s", "speech_end_s",
                          "duration_s", "sample_rate", "loudness_lufs", "peak", "clipped_share", "silence_share",
                          "snr_db", "bandwidth_hz", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "speaker_similarity",
                          "speaker_consistency", "speaker_change", "speaker_reference")),
    "transcripts": ("transcribe", ("clip_id", "text", "text_source", "language", "language_probability",
                                   "language_mismatch", "confidence", "avg_logprob", "no_speech_prob",
                                   "compression_ratio", "words", "hallucination", "model", "chosen_model")),
    # The KEPT clips only (clips_all.parquet beside it has every verdict).
    "dataset": ("build_dataset", ("clip_id", "source_id", "split", "text", "normalized", "duration_s",
                                  "chars_per_s", "wav")),
}


class ManifestError(VoicemillError):
    """A manifest is missing or malformed; the message names the file and the fix."""


def _check(df: pd.DataFrame, kind: str, path: Path) -> None:
    stage, required = SCHEMAS[kind]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)} of the {kind} manifest; "
            f"it is written by the {stage} stage: rerun it with 'dvc repro {stage}'"
        )
    if df.duplicated(required[0]).any():
        dup = df.loc[df.duplicated(required[0]), required[0]].iloc[0]
        raise ManifestError(f"{path}: duplicate {required[0]} {dup!r} in the {kind} manifest")


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Parquet, atomically (also for tables that are not a stage manifest)."""
    with atomic_path(Path(path)) as tmp:
        df.to_parquet(tmp, index=False)


def write(df: pd.DataFrame, path: Path, kind: str) -> None:
    """Validate ``df`` against the ``kind`` schema and write it atomically."""
    _check(df, kind, Path(path))
    write_table(df, path)


def read(path: Path, kind: str) -> pd.DataFrame:
    """Read and validate a manifest; ManifestError names the file and the fix."""
    path = Path(path)
    stage = SCHEMAS[kind][0]
    if not path.exists():
        raise ManifestError(f"{path}: not found; it is written by the {stage} stage: run 'dvc repro {stage}'")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several kinds for a corrupt file
        raise ManifestError(f"{path}: not a readable Parquet file ({e}); rerun 'dvc repro {stage}'") from e
    _check(df, kind, path)
    return df
