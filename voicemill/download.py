"""Sources: read the sources list, fetch every source, record provenance.

A sources file (``sources.yaml``) lists what to turn into a voice::

    sources:
      - source: demo                      # the bundled demo corpus (no network)
      - source: recordings/interview.m4a  # a local file, or a folder of media
        speaker: alice
      - source: https://www.youtube.com/watch?v=...   # anything yt-dlp fetches
        license: CC-BY

Optional fields per entry: ``title``, ``speaker``, ``language``, ``license``.
Relative paths are taken from the directory of the sources file.

Each fetched item becomes ``<out_dir>/<source_id>.wav`` (16-bit PCM, original
rate and channels) and one row of the ``sources`` manifest. A source that
fails is logged, listed in the manifest's companion ``failures.json`` with its
reason, and skipped; the stage fails only when nothing usable is left or the
failed share exceeds ``max_failed_share``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

from voicemill.audio import AudioError, probe, require_ffmpeg
from voicemill.fsutil import atomic_path
from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger(__name__)

MEDIA_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".mp4", ".mkv", ".webm", ".mov"}
ENTRY_KEYS = {"source", "title", "speaker", "language", "license"}


class SourcesError(VoicemillError, ValueError):
    """The sources file is malformed; the message names the entry and the fix."""


@dataclass(frozen=True)
class Source:
    kind: str  # "demo", "file" or "url"
    origin: str  # "demo", an absolute path, or a URL
    line: int  # entry number in the sources file (1-based), for messages
    meta: dict = field(default_factory=dict)


def read_sources(path: Path) -> list[Source]:
    """Parse and check a sources file; every problem names the entry number."""
    path = Path(path)
    if not path.exists():
        raise SourcesError(f"{path}: sources file not found; create it (see README, 'Your own sources')")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SourcesError(f"{path}: not valid YAML: {e}") from e
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SourcesError(f"{path}: expected a non-empty list under 'sources:'")
    out: list[Source] = []
    seen: dict[str, int] = {}
    problems = []
    for i, entry in enumerate(entries, 1):
        if isinstance(entry, str):
            entry = {"source": entry}
        if not isinstance(entry, dict) or "source" not in entry:
            problems.append(f"entry {i}: expected a mapping with a 'source' key, got {entry!r}")
            continue
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            problems.append(f"entry {i}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(ENTRY_KEYS))}")
            continue
        raw = str(entry["source"]).strip()
        meta = {k: str(v) for k, v in entry.items() if k != "source"}
        if raw == "demo":
            src = Source("demo", "demo", i, meta)
        elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", raw):
            parsed = urlparse(raw)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                problems.append(f"entry {i}: {raw!r} is not an http(s) URL")
                continue
            src = Source("url", raw, i, meta)
        else:
            p = Path(raw).expanduser()
            p = p if p.is_absolute() else (path.parent / p)
            if not p.exists():
                problems.append(f"entry {i}: {raw!r}: no such file or folder (relative paths start at {path.parent})")
                continue
            src = Source("file", str(p.resolve()), i, meta)
        if src.origin in seen:
            problems.append(f"entry {i}: duplicate of entry {seen[src.origin]} ({raw})")
            continue
        seen[src.origin] = i
        out.append(src)
    if problems:
        raise SourcesError(f"{path}: " + "; ".join(problems))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_wav(src: Path, dst: Path) -> None:
    """Extract the audio of any media file to 16-bit PCM WAV (original rate/channels)."""
    with atomic_path(dst) as tmp:
        cmd = [require_ffmpeg(), "-nostdin", "-v", "error", "-y", "-i", str(src), "-vn", "-acodec", "pcm_s16le",
               "-f", "wav", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AudioError(f"{src}: ffmpeg could not read its audio: {proc.stderr.strip().splitlines()[-1:] or '?'}")


def expand_files(src: Source) -> list[Path]:
    path = Path(src.origin)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise SourcesError(f"entry {src.line}: folder {path} holds no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
        return files
    return [path]


def _row(source_id: str, src: Source, origin: str, title: str, audio: Path, out_dir: Path, **extra) -> dict:
    info = probe(audio)
    if info["duration_s"] <= 0:
        raise AudioError(f"{origin}: the audio is empty")
    return {
        "source_id": source_id,
        "kind": src.kind,
        "origin": origin,
        "title": src.meta.get("title") or title,
        "channel": extra.pop("channel", ""),
        "license": src.meta.get("license") or extra.pop("license", "") or "",
        "speaker": src.meta.get("speaker", ""),
        "language": src.meta.get("language", ""),
        "audio_path": audio.relative_to(out_dir).as_posix(),
        "duration_s": info["duration_s"],
        "sample_rate": info["sample_rate"],
        "channels": info["channels"],
        "sha256": sha256_file(audio),
        "truth_path": extra.pop("truth_path", ""),
        "downloaded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def fetch_demo(src: Source, out_dir: Path, seed: int) -> list[dict]:
    from voicemill.demo import generate_demo

    rows = []
    for truth in generate_demo(out_dir, seed=seed):
        name = truth["episode"]
        audio = out_dir / f"{name}.wav"
        final = out_dir / f"demo-{name}.wav"
        audio.replace(final)
        truth_file = out_dir / f"{name}.truth.json"
        truth_final = out_dir / f"demo-{name}.truth.json"
        truth_file.replace(truth_final)
        rows.append(_row(f"demo-{name}", src, f"demo:{name}", truth["title"], final, out_dir,
                         license="CC0 (synthesized by the joe Piper voice)", channel="voicemill demo",
                         truth_path=truth_final.name))
    return rows


def fetch_file(src: Source, path: Path, out_dir: Path) -> dict:
    source_id = f"file-{sha256_file(path)[:12]}"
    wav = out_dir / f"{source_id}.wav"
    to_wav(path, wav)
    return _row(source_id, src, str(path), path.stem, wav, out_dir)


def fetch_url(src: Source, out_dir: Path, timeout_s: float, retries: int, quiet: bool = True) -> dict:
    """Download one URL with yt-dlp, best audio extracted to WAV."""
    import yt_dlp

    source_id = f"url-{hashlib.sha256(src.origin.encode()).hexdigest()[:12]}"
    work = out_dir / f".tmp-{source_id}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    opts = {
        "format": "bestaudio/best",
        "outtmpl": str(work / "audio.%(ext)s"),
        "noplaylist": True,
        "quiet": quiet,
        "no_warnings": quiet,
        "noprogress": True,
        "retries": retries,
        "fragment_retries": retries,
        "socket_timeout": timeout_s,
        "postprocessors": [{"key": "FFmpegExtractAudio", "preferredcodec": "wav"}],
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(src.origin, download=True)
        produced = sorted(work.glob("audio.wav"))
        if not produced:
            raise AudioError(f"{src.origin}: yt-dlp produced no audio")
        wav = out_dir / f"{source_id}.wav"
        produced[0].replace(wav)
        return _row(source_id, src, src.origin, info.get("title") or source_id, wav, out_dir,
                    channel=info.get("channel") or info.get("uploader") or "", license=info.get("license") or "")
    except yt_dlp.utils.DownloadError as e:
        raise AudioError(f"{src.origin}: download failed: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download(sources: list[Source], out_dir: Path, seed: int, timeout_s: float, retries: int,
             quiet: bool = True) -> tuple[list[dict], list[dict]]:
    """Fetch every source into ``out_dir``; returns (rows, failures).

    A failing item is logged and recorded in ``failures`` with its reason; the
    others go on.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    failures: list[dict] = []
    for src in tqdm(sources, desc="download", unit="source", disable=None):
        try:
            if src.kind == "demo":
                rows.extend(fetch_demo(src, out_dir, seed))
            elif src.kind == "file":
                for path in expand_files(src):
                    try:
                        rows.append(fetch_file(src, path, out_dir))
                    except AudioError as e:
                        _LOGGER.warning("skipped %s: %s", path, e)
                        failures.append({"entry": src.line, "origin": str(path), "reason": str(e)})
            elif src.kind == "url":
                rows.append(fetch_url(src, out_dir, timeout_s, retries, quiet))
            else:
                raise SourcesError(f"entry {src.line}: unknown source kind {src.kind!r}")
        except (AudioError, SourcesError, OSError) as e:
            _LOGGER.warning("skipped entry %d (%s): %s", src.line, src.origin, e)
            failures.append({"entry": src.line, "origin": src.origin, "reason": str(e)})
    seen = {}
    unique = []
    for row in rows:
        if row["source_id"] in seen:
            _LOGGER.warning("%s has the same audio as %s; kept once", row["origin"], seen[row["source_id"]])
            continue
        seen[row["source_id"]] = row["origin"]
        unique.append(row)
    return unique, failures
