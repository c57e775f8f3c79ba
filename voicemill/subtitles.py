"""Human subtitles (WebVTT): parse the cues and take the ones that fit a clip.

The download stage keeps human-made subtitles of a video as
``<raw>/<source_id>.<lang>.vtt`` (auto-generated captions are never taken),
and segment copies them to ``<clips>/subtitles/``. Their cue times are in the
video; a source trimmed at download (``start:``) starts ``start_s`` seconds
into it, so a clip's times are shifted by that before they are compared.

A clip takes its text from the subtitles when the cues fit it:

- every cue that overlaps the clip by more than ``tolerance_s`` lies inside it
  (within ``tolerance_s`` at both ends): no cue is split between two clips,
  because a cue's text cannot be divided honestly by time;
- at least one cue with speech lies inside it, and the cues with speech
  inside cover at least ``min_coverage`` of the clip's duration (a clip with
  a stretch of unsubtitled speech does not take a partial text).

Otherwise the clip falls back to ASR. Cue text is cleaned of markup
(``<c>``, ``<v Name>``, inline timestamps), HTML entities, speaker labels
("ANNA: "), dialogue dashes, and non-speech annotations ("[Music]",
"(laughs)"); a cue with music notes (lyrics) counts as no speech.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from voicemill.errors import VoicemillError

SUBTITLES_DIR = "subtitles"


class SubtitlesError(VoicemillError):
    """A subtitle file cannot be read; the message names it."""


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


# 00:01:02.500 --> 00:01:04.000 align:start position:0%   (hours optional; "," accepted as in SRT)
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_TIMING_RE = re.compile(rf"^\s*{_TIME}\s+-->\s+{_TIME}")
_TAG_RE = re.compile(r"<[^>]*>")
_NON_SPEECH_RE = re.compile(r"\[[^\]]*\]|\([^)]*\)")
_SPEAKER_RE = re.compile(r"^(?:>>\s*)?[A-Z][A-Z0-9 .'-]{0,30}:\s+")
_DASH_RE = re.compile(r"^\s*[-–—]\s*")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def clean_cue_text(lines: list[str]) -> str:
    """The spoken words of a cue's payload lines ("" when it holds none)."""
    out = []
    for line in lines:
        line = html.unescape(_TAG_RE.sub("", line)).replace("\u200e", "").replace("\u200f", "")
        if "♪" in line or "♫" in line:
            return ""
        line = _NON_SPEECH_RE.sub(" ", line)
        line = _DASH_RE.sub("", line)
        line = _SPEAKER_RE.sub("", line)
        out.append(line)
    return re.sub(r"\s+", " ", " ".join(out)).strip()


def parse_vtt(text: str) -> list[Cue]:
    """Cues of a WebVTT document, in time order, with their spoken text."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues: list[Cue] = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.strip("\n").split("\n")
        # A cue is an optional identifier line, the timing line, then the payload;
        # header, NOTE, STYLE and REGION blocks have no timing line.
        timing = next((i for i, line in enumerate(lines[:2]) if "-->" in line), None)
        if timing is None:
            continue
        m = _TIMING_RE.match(lines[timing])
        if not m:
            continue
        start, end = _seconds(*m.group(1, 2, 3, 4)), _seconds(*m.group(5, 6, 7, 8))
        if end <= start:
            continue
        words = clean_cue_text(lines[timing + 1:])
        if cues and words and words == cues[-1].text and start - cues[-1].end_s < 0.05:
            # the same line repeated in back-to-back cues: one cue
            cues[-1] = Cue(cues[-1].start_s, end, words)
            continue
        cues.append(Cue(start, end, words))
    return sorted(cues, key=lambda c: c.start_s)


def read_vtt(path: Path) -> list[Cue]:
    try:
        content = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SubtitlesError(f"{path}: cannot read the subtitles ({e})") from e
    if not content.lstrip("\ufeff").startswith("WEBVTT"):
        raise SubtitlesError(f"{path}: not a WebVTT file (no WEBVTT header); "
                             "download it again with 'dvc repro -f download'")
    return parse_vtt(content)


def find(folder: Path, source_id: str, language: str) -> Path | None:
    """The subtitles of ``source_id`` in ``language`` (``en`` also takes ``en-GB``); exact match first."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    exact = folder / f"{source_id}.{language}.vtt"
    if exact.exists():
        return exact
    variants = sorted(folder.glob(f"{source_id}.{language}-*.vtt"))
    return variants[0] if variants else None


def text_for_clip(cues: list[Cue], start_s: float, end_s: float, tolerance_s: float = 0.5,
                  min_coverage: float = 0.5) -> str | None:
    """The subtitle text of the clip [start_s, end_s] (times of the cues), or None when the cues do not fit it."""
    inside = []
    for cue in cues:
        overlap = min(cue.end_s, end_s) - max(cue.start_s, start_s)
        if overlap <= 0:
            continue
        if cue.start_s >= start_s - tolerance_s and cue.end_s <= end_s + tolerance_s:
            inside.append(cue)
        elif overlap > tolerance_s:
            return None  # a cue runs across the clip's edge: its text cannot be split
        # else: a neighbour's cue reaching into the clip's padding by timing slop
    spoken = [c for c in inside if c.text]
    if not spoken:
        return None
    covered, last = 0.0, start_s
    for c in spoken:
        a, b = max(c.start_s, last), min(c.end_s, end_s)
        if b > a:
            covered += b - a
            last = b
    if covered < min_coverage * (end_s - start_s):
        return None
    return " ".join(c.text for c in spoken)
