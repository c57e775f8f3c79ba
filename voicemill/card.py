"""The dataset card: ``README.md`` next to the dataset, with its histograms.

It says what is in the dataset (clips, hours, split, fingerprint), whether
that is enough for a voice, what was dropped and by which param, how long the
clips are and how fast they are spoken (``duration_hist.png``,
``rate_hist.png``), which characters the voice will learn, and where the audio
came from. The YAML header is the Hugging Face dataset card metadata, so the
folder can be pushed to the Hub as it is. Every number comes from the same
table as ``metrics/dataset.json`` and ``clips_all.parquet``.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pandas as pd

from voicemill.fsutil import atomic_path

#: Minutes of clean speech that VITS usually needs (rules of thumb, not laws).
FINETUNE_MIN = (20, 60)
SCRATCH_HOURS = 10
LJSPEECH_HOURS = 24

#: Letters a character-input voice should have seen, per language.
ALPHABETS = {"en": string.ascii_lowercase}

RARE_COUNT = 10


def sufficiency(minutes: float) -> str:
    """One paragraph: the minutes kept against what VITS training usually needs."""
    lo, hi = FINETUNE_MIN
    need = (f"Fine-tuning a pretrained voice (`train.init_from`, a Piper voice) usually takes {lo}-{hi} min "
            f"of clean speech of one speaker; training from scratch takes {SCRATCH_HOURS}+ hours (LJSpeech has "
            f"{LJSPEECH_HOURS} h).")
    if minutes < lo:
        verdict = (f"**{minutes:.1f} min is not enough for a usable voice**: it proves the pipeline runs. "
                   f"Add at least {lo - minutes:.0f} more minutes of clean speech to fine-tune.")
    elif minutes < hi:
        verdict = (f"**{minutes:.1f} min is enough to fine-tune** from a checkpoint; more (up to {hi} min) "
                   "still helps. It is far too little to train from scratch.")
    elif minutes < SCRATCH_HOURS * 60:
        verdict = (f"**{minutes / 60:.1f} h is plenty to fine-tune**; training from scratch needs "
                   f"{SCRATCH_HOURS}+ hours.")
    else:
        verdict = f"**{minutes / 60:.1f} h is enough to train from scratch.**"
    return f"{verdict} {need}"


def _cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _histogram(path: Path, kept: pd.Series, dropped: pd.Series, xlabel: str, title: str) -> None:
    # The object-oriented API needs no pyplot and no backend switch (Agg is
    # used for PNG); no Software/date metadata, so a rerun writes the same bytes.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3), dpi=100)
    ax = fig.add_subplot()
    values = [v.to_numpy(dtype=float) for v in (kept, dropped)]
    both = [x for v in values for x in v]
    if both:
        ax.hist(values, bins=30, range=(min(both), max(both) + 1e-9), stacked=True,
                label=[f"kept ({len(values[0])})", f"dropped ({len(values[1])})"], color=["#3a7", "#c54"])
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clips")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def coverage(ids: list[str], texts: list[str], language: str) -> dict:
    """Characters of the lowercased texts: counts, letters never seen, rare ones, clips with digits."""
    counts = Counter(c for t in texts for c in t.lower())
    return {
        "counts": counts,
        "unseen": [c for c in ALPHABETS.get(language, "") if counts[c] == 0],
        "rare": sorted((c for c, n in counts.items() if n < RARE_COUNT and not c.isspace()),
                       key=lambda c: (counts[c], c)),
        "with_digits": [i for i, t in zip(ids, texts) if any(ch.isdigit() for ch in t)],
    }


def _char_name(c: str) -> str:
    return "space" if c == " " else f"`{c}`" if c != "`" else "backtick"


def render(clips: pd.DataFrame, summary: dict, statuses: dict[str, str], opts,
           sources: pd.DataFrame | None) -> str:
    """The card's Markdown."""
    from voicemill.dataset import FILTERS

    kept = clips[clips["kept"]]
    minutes = float(kept["duration_s"].sum()) / 60
    lines: list[str] = []

    licenses = []
    if sources is not None and "license" in sources.columns:
        used = sources[sources["source_id"].isin(kept["source_id"])]
        licenses = sorted({str(v) for v in used["license"].fillna("") if str(v)})
    lines += ["---", "pretty_name: voicemill TTS dataset", "language:", f"- {opts.language}"]
    # The Hub wants a license id; anything else (or several) is "other", named.
    if len(licenses) == 1 and re.fullmatch(r"[A-Za-z0-9.+-]+", licenses[0]):
        lines.append(f"license: {licenses[0].lower()}")
    elif licenses:
        lines += ["license: other", f"license_name: {json.dumps('; '.join(licenses))}"]
    lines += ["task_categories:", "- text-to-speech", "size_categories:", f"- {_size_category(len(kept))}",
              "configs:", "- config_name: default", "  data_files: dataset.parquet", "---", ""]

    lines += ["# Dataset card", "",
              "A single-speaker text-to-speech dataset in the LJSpeech layout, built by voicemill's "
              "`build_dataset` stage from segmented, transcribed recordings. The voice learns the normalised "
              "text (third column of `metadata.csv`).", ""]

    lines += ["## Summary", ""]
    lines += _table(["what", "value"], [
        ["clips kept", summary["clips"]],
        ["train clips", summary["train"]],
        ["val clips", summary["val"]],
        ["hours kept", f"{summary['hours']:.4f}"],
        ["minutes kept", f"{minutes:.2f}"],
        ["clips in", summary["clips_in"]],
        ["clips dropped", sum(summary["dropped"].values())],
        ["median duration (s)", f"{summary['duration_s_median']:.2f}"],
        ["median speaking rate (characters/s)", f"{summary['chars_per_s_median']:.2f}"],
        ["fingerprint", f"`{summary['fingerprint']}`"],
    ])
    lines += ["", "The fingerprint is a sha256 over the kept clips sorted by id (id, split, normalised text, "
              "sha256 of the audio): two builds with the same fingerprint hold the same data.", ""]

    lines += ["## Is it enough?", "", sufficiency(minutes), ""]

    lines += ["## What was dropped, and why", "",
              "The filters run in this order. A clip counts as *dropped* under the first filter it fails, so "
              "the drops add up to the clips dropped; *failing* counts every clip that fails the filter, "
              "dropped earlier or not. Every clip's verdict is in `clips_all.parquet` (`kept`, "
              "`drop_reason`, `drop_reasons`).", ""]
    failing = Counter(r for rs in clips["drop_reasons"] for r in rs.split(",") if r)
    rows = []
    for i, f in enumerate(FILTERS, 1):
        knob = ", ".join(f"`build_dataset.{n}` = {_value(getattr(opts, n))}" for n in f.params) or "-"
        rows.append([i, f"`{f.reason}`", f.what, knob, summary["dropped"][f.reason], failing[f.reason],
                     statuses[f.reason]])
    lines += _table(["#", "reason", "what", "param", "dropped", "failing", "status"], rows)
    lines += [""]

    lines += ["## Minutes per speaker", "",
              "Minutes segmented, kept and lost per first drop reason, by the sources' `speaker` "
              "(\"-\" where a source names none)."
              + (" With ground truth, the share of the target speaker's speech that reached the dataset: "
                 f"**{summary['truth']['target_speech_kept_share']:.2f}** "
                 f"({summary['truth']['target_speech_kept_s'] / 60:.2f} of "
                 f"{summary['truth']['target_speech_s'] / 60:.2f} min), with "
                 f"{summary['truth'].get('clip_label_exact_share', float('nan')):.2f} of the kept clips' labels "
                 "exactly what their audio says."
                 if summary.get("truth", {}).get("target_speech_s") else ""), ""]
    lines += _table(["speaker", "segmented (min)", "kept (min)", "lost (min) by reason"],
                    [[name or "-", m["segmented_min"], m["kept_min"],
                      ", ".join(f"{r} {v:.2f}" for r, v in m["lost_min"].items()) or "-"]
                     for name, m in summary.get("minutes", {}).items()])
    lines += [""]

    lines += ["## Duration and speaking rate", "",
              "Speaking rate is letters and digits of the normalised text per second of speech (the span "
              "segment measured, else the whole clip).", "",
              "![Clip durations, kept and dropped](duration_hist.png)", "",
              "![Speaking rate, kept and dropped](rate_hist.png)", ""]
    stats = []
    for name, col in (("duration (s)", "duration_s"), ("speaking rate (characters/s)", "chars_per_s")):
        v = kept[col].astype(float)
        stats.append([name, f"{v.min():.2f}", f"{v.quantile(0.25):.2f}", f"{v.median():.2f}",
                      f"{v.quantile(0.75):.2f}", f"{v.max():.2f}"])
    lines += _table(["kept clips", "min", "q1", "median", "q3", "max"], stats) + [""]

    cov = coverage(kept["clip_id"].tolist(), kept["normalized"].tolist(), opts.language)
    counts, unseen, rare, digits = cov["counts"], cov["unseen"], cov["rare"], cov["with_digits"]
    lines += ["## Character coverage", "",
              f"{len(counts)} distinct characters, {sum(counts.values())} in all, in the lowercased normalised "
              "text of the kept clips (what a character-input voice learns).", ""]
    if opts.language in ALPHABETS:
        lines.append(f"- letters never seen: {', '.join(unseen) if unseen else 'none'}")
    lines.append(f"- rare (fewer than {RARE_COUNT}): {', '.join(_char_name(c) for c in rare) if rare else 'none'}")
    lines.append(f"- clips with digits left after normalisation: {len(digits)}"
                 + (f" ({', '.join(digits[:5])}{', ...' if len(digits) > 5 else ''})" if digits else ""))
    lines += [""] + _table(["character", "count"], [[_char_name(c), n] for c, n in
                                                     sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))])
    lines += [""]

    lines += ["## Sources", ""]
    per = clips.groupby("source_id").agg(clips_in=("clip_id", "size"), kept=("kept", "sum"))
    per["minutes_kept"] = kept.groupby("source_id")["duration_s"].sum().reindex(per.index, fill_value=0) / 60
    info = sources.set_index("source_id") if sources is not None else None
    rows = []
    for sid, r in per.iterrows():
        meta = info.loc[sid] if info is not None and sid in info.index else None
        get = (lambda k: meta[k] if meta is not None and k in meta.index else "")
        rows.append([f"`{sid}`", get("title"), get("speaker"), get("license"), get("origin"), int(r["kept"]),
                     int(r["clips_in"]), f"{r['minutes_kept']:.2f}"])
    lines += _table(["source", "title", "speaker", "license", "origin", "clips kept", "clips in", "minutes kept"],
                    rows)
    if sources is None:
        lines += ["", "Titles, speakers and licenses: run the stage with `--raw data/raw` (the download manifest)."]
    lines += [""]

    lines += ["## Files", "",
              "- `wavs/<clip_id>.wav`: the kept clips",
              "- `metadata.csv`, `metadata_train.csv`, `metadata_val.csv`: `id|raw text|normalized text`",
              "- `manifest.parquet`: one row per kept clip with its measures, transcript and split",
              "- `clips_all.parquet`: one row per clip, kept or dropped, with its verdict",
              "- `dataset.parquet`: the kept clips in the Hugging Face audio layout "
              "(`audio` {bytes, path}, `text`, `raw_text`, `speaker_id`, `split`)",
              "- `duration_hist.png`, `rate_hist.png`: the histograms above", ""]
    return "\n".join(lines)


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def write_card(out_dir: Path, clips: pd.DataFrame, summary: dict, statuses: dict[str, str], opts,
               sources: pd.DataFrame | None = None) -> None:
    """Write ``README.md``, ``duration_hist.png`` and ``rate_hist.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    kept, dropped = clips[clips["kept"]], clips[~clips["kept"]]
    _histogram(out_dir / "duration_hist.png", kept["duration_s"], dropped["duration_s"], "clip duration (s)",
               "Clip durations")
    _histogram(out_dir / "rate_hist.png", kept["chars_per_s"], dropped.loc[dropped["has_transcript"], "chars_per_s"],
               "speaking rate (characters/s)", "Speaking rate")
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(render(clips, summary, statuses, opts, sources), encoding="utf-8")
