"""The sources file: what voicemill turns into a voice.

``sources.yaml`` (the download stage's dependency) lists one entry per
source::

    sources:
      - source: demo                              # the bundled demo corpus (no network)
      - source: recordings/interview.m4a          # a local media file...
        speaker: alice
        start: 12.5                               # trim, seconds or [HH:]MM:SS
        end: "41:30"
      - source: /data/audiobook/                  # ...or a folder of media files
      - source: https://www.youtube.com/watch?v=XXXXXXXXXXX   # a video, playlist or channel
        license: CC-BY
        subtitles: [en]                           # fetch human-made subtitles in these languages
      - source: corpora/coral/                    # a Parquet speech dataset (file or folder)
        language: da
      - source: samples/alice_reference.wav       # the voice to keep: clips are scored against it
        role: reference

Fields: ``source`` (required), ``kind`` (``demo``, ``file``, ``url``,
``parquet``; inferred when left out), ``title``, ``speaker``, ``language``,
``license``, ``start``, ``end``, ``subtitles``, ``role``. ``role`` is ``voice``
(the default: the source is cut into clips) or ``reference``: a recording of
the target speaker, never cut into clips, against which segment scores the
speaker similarity of every clip. Relative paths start at the
folder of the sources file. Every problem is reported with the entry's line
number in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from voicemill.errors import VoicemillError
from voicemill.fsutil import read_text_file

KINDS = ("demo", "file", "url", "parquet")
FIELDS = {"source", "kind", "title", "speaker", "language", "license", "start", "end", "subtitles", "role"}
ROLES = ("voice", "reference")


_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")  # scheme://...


class SourcesError(VoicemillError, ValueError):
    """The sources file is malformed; the message names the line and the fix."""


@dataclass(frozen=True)
class Source:
    kind: str  # one of KINDS
    origin: str  # "demo", an absolute path, or a URL
    line: int  # line of the entry in the sources file, for messages
    meta: dict = field(default_factory=dict)  # title, speaker, language, license
    start_s: float | None = None
    end_s: float | None = None
    subtitles: tuple[str, ...] = ()

    @property
    def trim(self) -> str:
        """A stable text form of the trim, part of the source id."""
        if self.start_s is None and self.end_s is None:
            return ""
        return f"{self.start_s or 0:g}-{'' if self.end_s is None else f'{self.end_s:g}'}"

    @property
    def entry(self) -> str:
        """The entry's key in the download manifest: which items it brought, across runs."""
        return f"{self.origin}|{self.trim}"


def parse_time(value, where: str) -> float:
    """Seconds from a number or '[HH:]MM:SS[.f]'."""
    if isinstance(value, bool):
        raise SourcesError(f"{where}: expected seconds or [HH:]MM:SS, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)|(\d+(?:\.\d+)?)", str(value).strip())
        if not m:
            raise SourcesError(f"{where}: expected seconds or [HH:]MM:SS, got {value!r}")
        if m.group(4):
            seconds = float(m.group(4))
        else:
            if float(m.group(3)) >= 60 or (m.group(1) is not None and int(m.group(2)) >= 60):
                raise SourcesError(f"{where}: {value!r} is not a time: minutes and seconds run from 00 to 59 "
                                   f"([HH:]MM:SS, e.g. '1:39' for 99 s)")
            seconds = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    if seconds < 0:
        raise SourcesError(f"{where}: a time cannot be negative ({value!r})")
    return seconds


def _entry_lines(text: str) -> list[int]:
    """1-based line numbers of the items under ``sources:``."""
    node = yaml.compose(text)
    if node is None or not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "sources" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _infer_kind(raw: str, path: Path | None) -> str:
    if raw == "demo":
        return "demo"
    if _URL_RE.match(raw):
        return "url"
    if path is not None and (path.suffix.lower() == ".parquet" or (
            path.is_dir() and any(path.glob("*.parquet")) and not any(
                p.suffix.lower() != ".parquet" for p in path.iterdir() if p.is_file()))):
        return "parquet"
    return "file"


def read_sources(path: Path) -> list[Source]:
    """Parse and check a sources file; all problems are reported together, by line."""
    path = Path(path)
    if not path.exists():
        raise SourcesError(f"{path}: sources file not found; create it (see README, 'Your own sources')")
    text = read_text_file(path, SourcesError, "--sources expects a sources file such as sources.yaml (see "
                          f"README, 'Your own sources'; a folder of media files goes inside it as '- source: {path}')")
    try:
        data = yaml.safe_load(text) or {}
        lines = _entry_lines(text)
    except yaml.YAMLError as e:
        raise SourcesError(f"{path}: not valid YAML: {e}") from e
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SourcesError(f"{path}: expected a non-empty list under 'sources:'")
    out: list[Source] = []
    seen: dict[tuple, int] = {}
    problems = []
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else i + 1
        where = f"line {line}"
        if isinstance(entry, str):
            entry = {"source": entry}
        if not isinstance(entry, dict) or "source" not in entry:
            problems.append(f"{where}: expected a mapping with a 'source' key, got {entry!r}")
            continue
        unknown = set(entry) - FIELDS
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(FIELDS))}")
            continue
        try:
            src = _make_source(entry, path, line, where)
        except SourcesError as e:
            problems.append(str(e))
            continue
        key = (src.origin, src.trim)
        if key in seen:
            problems.append(f"{where}: duplicate of the entry on line {seen[key]} ({entry['source']})")
            continue
        seen[key] = line
        out.append(src)
    if problems:
        raise SourcesError(f"{path}: " + "; ".join(problems))
    return out


def _make_source(entry: dict, path: Path, line: int, where: str) -> Source:
    if not isinstance(entry["source"], str):
        raise SourcesError(f"{where}: source: expected a string (a path, a URL or demo), got {entry['source']!r} "
                           f"({type(entry['source']).__name__}); quote it if it is a file name")
    raw = entry["source"].strip()
    local = None
    if raw != "demo" and not _URL_RE.match(raw):
        local = Path(raw).expanduser()
        local = local if local.is_absolute() else (path.parent / local)
    kind = entry.get("kind") or _infer_kind(raw, local)
    if kind not in KINDS:
        raise SourcesError(f"{where}: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "url":
        parsed = urlparse(raw)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SourcesError(f"{where}: {raw!r} is not an http(s) URL")
        origin = raw
    elif kind == "demo":
        origin = "demo"
    else:
        if local is None or not local.exists():
            raise SourcesError(f"{where}: {raw!r}: no such file or folder (relative paths start at {path.parent})")
        origin = str(local.resolve())
    start = parse_time(entry["start"], f"{where}: start") if entry.get("start") is not None else None
    end = parse_time(entry["end"], f"{where}: end") if entry.get("end") is not None else None
    if start is not None and end is not None and end <= start:
        raise SourcesError(f"{where}: end ({end:g} s) must come after start ({start:g} s)")
    subs = entry.get("subtitles") or ()
    if subs is True:
        subs = ("en",)
    if isinstance(subs, str):
        subs = (subs,)
    if not isinstance(subs, (list, tuple)) or not all(isinstance(s, str) for s in subs):
        raise SourcesError(f"{where}: subtitles must be true or a list of language codes, got {subs!r}")
    if subs and kind != "url":
        raise SourcesError(f"{where}: subtitles can only be fetched for URL sources")
    role = str(entry.get("role") or "voice")
    if role not in ROLES:
        raise SourcesError(f"{where}: unknown role {role!r}; choose from {', '.join(ROLES)}")
    if role == "reference" and kind in ("demo", "parquet"):
        raise SourcesError(f"{where}: role 'reference' needs a media file or URL (the demo brings its own)")
    meta = {k: str(entry[k]) for k in ("title", "speaker", "language", "license") if entry.get(k) is not None}
    meta["role"] = role
    return Source(kind, origin, line, meta, start, end, tuple(subs))
