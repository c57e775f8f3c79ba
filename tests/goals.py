"""The demo's data goals, checked by the end-to-end run and under other machines' code paths.

Each bound holds with a margin on any x86-64 CPU: what the pipeline promises
(nearly every sentence whole, no cut inside a word, clips of one voice, a
transcript within a few percent of the truth), not one machine's numbers.
The spread measured across instruction sets is in the README
("Results on other machines").
"""

from __future__ import annotations

import json
from pathlib import Path


def check_demo_data(metrics_dir: Path, measure=None) -> None:
    """Assert the segment, transcribe and build_dataset goals on the demo's metrics files."""
    measure = measure or (lambda name, value: value)
    segment = json.loads((metrics_dir / "segment.json").read_text())["truth"]
    # Issue 4's goals. 49 of 50 fitting sentences whole here; one more sentence
    # split at a pause on another machine is 0.96, still "nearly all".
    assert measure("segment_sentences_whole_share", segment["sentences_whole_share"]) >= 0.94, segment
    assert measure("segment_boundary_error_median_ms", segment["boundary_error_median_ms"]) <= 80, segment
    assert segment["cuts_inside_words"] == 0, segment
    assert measure("segment_speaker_purity", segment["speaker_purity"]) >= 0.98, segment
    # Issue 5's goals: the transcript against the truth (2.8 % here; a few words
    # more or less misheard on another CPU's int8 kernels).
    heard = json.loads((metrics_dir / "transcribe.json").read_text())["truth"]
    assert measure("transcribe_truth_wer", heard["wer"]) <= 0.05, heard
    assert heard["sentences_covered"] == heard["sentences"], heard
    dataset = json.loads((metrics_dir / "dataset.json").read_text())
    assert {"hours", "clips", "dropped", "fingerprint"} <= dataset.keys()
    # Filters near their thresholds (speaking-rate fences, DNSMOS, similarity)
    # may keep a clip or two more or less elsewhere; 42 of 50 kept here.
    assert measure("dataset_clips", dataset["clips"]) >= 34, dataset
    assert measure("dataset_minutes", dataset["hours"] * 60) > 3.5, dataset  # over 4 minutes of speech, pauses trimmed
