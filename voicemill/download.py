"""Fetch every source into one folder, incrementally, and record provenance.

Each item (a demo episode, a local file, a video, a Parquet row) gets a stable
id and becomes ``<out>/<id>.wav`` (16-bit PCM, original rate and channels)
plus one row of the ``sources`` manifest. Ids are derived from what defines the
item: a local file's content hash, a URL (and trim), a Parquet file's content
hash and row, the demo's text and seed.

Incremental runs: the download stage's output folder persists between runs
(DVC ``persist: true``). An item whose id and fingerprint are in the previous
manifest and whose WAV is still there with the recorded size and sha256 is
kept as it is, without touching the network: adding one URL to a list of 200
downloads one item. A single-video URL that was fetched before is not even
asked for again; a playlist or channel is re-listed (one cheap request) so
that new videos are found. Items whose source left the sources file are
deleted from the folder and the manifest.

Failures: a source or item that fails is skipped, and reported with its
sources-file line and reason (log, ``failures.json``); the caller decides
whether too much failed. Every file is written under a temporary name and
renamed when complete, and the manifest is written last, so an interrupted
run leaves nothing that a later run mistakes for a finished item.

Credentials: a cookies file is taken from the environment
(``VOICEMILL_COOKIES_FILE``), handed to yt-dlp, and never written to the
manifest, the logs or any output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from voicemill import manifest
from voicemill.audio import AudioError, probe, require_ffmpeg
from voicemill.errors import VoicemillError
from voicemill.fsutil import atomic_path, is_fatal, raise_fatal_os_error, sha256_file, write_json
from voicemill.params import defaults_from
from voicemill.sources import Source, SourcesError

_LOGGER = logging.getLogger(__name__)

MEDIA_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".mp4", ".mkv", ".webm", ".mov"}
COOKIES_ENV = "VOICEMILL_COOKIES_FILE"
PARQUET_BATCH_ROWS = 32
#: A trim may end this far past a recording's end (rounded times) before it is a bad entry.
TRIM_SLACK_S = 0.5


@dataclass(frozen=True)
@defaults_from('download', 'common')
class FetchOptions:
    """Defaults and meanings: the download and common params (voicemill/params.py)."""

    max_failed_share: float
    seed: int
    timeout_s: float
    retries: int
    backoff_s: float
    rate_limit: str
    quiet: bool = True


class ItemError(RuntimeError):
    """One item failed; the message says why."""


# ----------------------------------------------------------------- helpers


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def to_wav(src: Path, dst: Path, start_s: float | None = None, end_s: float | None = None) -> None:
    """Extract the audio of any media file to 16-bit PCM WAV (original rate and channels), streaming."""
    trim = []
    if start_s is not None or end_s is not None:
        length = probe(src)["duration_s"]
        for name, t in (("start", start_s), ("end", end_s)):
            if t is not None and t > length + TRIM_SLACK_S:
                raise AudioError(f"{src}: the entry's {name} ({t:g} s) is past the end of the recording "
                                 f"({length:.1f} s); fix or remove the entry's {name}")
    if start_s is not None:
        trim += ["-ss", f"{start_s:.3f}"]
    if end_s is not None:
        trim += ["-to", f"{end_s:.3f}"]
    with atomic_path(dst) as tmp:
        cmd = [require_ffmpeg(), "-nostdin", "-v", "error", "-y", *trim, "-i", str(src), "-vn", "-map", "0:a:0",
               "-acodec", "pcm_s16le", "-f", "wav", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise_fatal_os_error(proc.stderr, tmp)
            last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise AudioError(f"{src}: ffmpeg could not read its audio ({last})")
        if tmp.stat().st_size <= 44:
            raise AudioError(f"{src}: no audio in the requested range")


def expand_folder(path: Path, line: int) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise SourcesError(f"line {line}: folder {path} holds no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
        return files
    return [path]


def finish_row(out_dir: Path, source_id: str, src: Source, fingerprint: str, **fields) -> dict:
    """Probe the written WAV and build its manifest row."""
    audio = out_dir / f"{source_id}.wav"
    info = probe(audio)
    if info["duration_s"] <= 0:
        raise AudioError(f"{fields.get('origin', source_id)}: the audio is empty")
    row = {
        "source_id": source_id,
        "kind": src.kind,
        "entry": src.entry,
        "origin": src.origin,
        "title": src.meta.get("title") or "",
        "channel": "",
        "upload_date": "",
        "playlist": "",
        "license": src.meta.get("license", ""),
        "speaker": src.meta.get("speaker", ""),
        "role": src.meta.get("role", "voice"),
        "language": src.meta.get("language", ""),
        "text": "",
        "subtitles": "[]",
        "truth_path": "",
        "start_s": src.start_s if src.start_s is not None else float("nan"),
        "end_s": src.end_s if src.end_s is not None else float("nan"),
    }
    row.update({k: v for k, v in fields.items() if v not in (None, "") or k not in row})
    row.update({
        "audio_path": audio.name,
        "duration_s": info["duration_s"],
        "sample_rate": info["sample_rate"],
        "channels": info["channels"],
        "size_bytes": audio.stat().st_size,
        "sha256": sha256_file(audio),
        "fingerprint": fingerprint,
        "downloaded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return row


# ----------------------------------------------------------- previous run


class Previous:
    """The items of the previous run that are still intact on disk."""

    def __init__(self, out_dir: Path):
        self.rows: dict[str, dict] = {}
        self.folder = out_dir
        path = out_dir / "manifest.parquet"
        if not path.exists():
            return
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - a broken manifest only costs a re-download
            _LOGGER.warning("%s unreadable (%s); every source is fetched again", path, e)
            return
        for row in df.to_dict("records"):
            audio = out_dir / str(row.get("audio_path", ""))
            if audio.exists() and audio.stat().st_size == row.get("size_bytes") and sha256_file(audio) == row["sha256"]:
                self.rows[row["source_id"]] = row
            else:
                _LOGGER.info("%s: missing or changed on disk; fetched again", row["source_id"])

    def get(self, source_id: str, fingerprint: str) -> dict | None:
        row = self.rows.get(source_id)
        return row if row is not None and row.get("fingerprint") == fingerprint else None

    def of_entry(self, src: Source) -> list[dict]:
        return [r for r in self.rows.values() if r.get("entry") == src.entry]

    def of_origin(self, origin: str) -> list[dict]:
        """The items an entry for ``origin`` (a file, URL or an entry's source) brought, whatever its trim."""
        return [r for r in self.rows.values()
                if r.get("origin") == origin or str(r.get("entry", "")).rsplit("|", 1)[0] == origin]


# ------------------------------------------------------------------ kinds


def fetch_demo(src: Source, out_dir: Path, opts: FetchOptions, previous: Previous) -> list[dict]:
    """The demo's episodes and reference; new files go to ``out_dir`` (the staging folder)."""
    from voicemill.demo import DEMO_VERSION, EPISODES, REFERENCE_SENTENCES, load_voice, write_episode, write_reference

    rows, voice = [], None
    common = dict(channel="voicemill demo", license="CC0 (synthesized by the joe Piper voice)", language="en")
    for episode in EPISODES:
        source_id = f"demo-{episode.name}"
        fingerprint = short_hash("demo", DEMO_VERSION, str(opts.seed), episode.title, *episode.fingerprint_parts())
        kept = previous.get(source_id, fingerprint)
        if kept is not None and (previous.folder / kept["truth_path"]).exists():
            rows.append(kept)
            continue
        voice = voice or load_voice(alignments=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tmp-demo-") as tmp:
            truth = write_episode(voice, episode, Path(tmp), opts.seed)
            os.replace(Path(tmp) / f"{episode.name}.truth.json", out_dir / f"{source_id}.truth.json")
            os.replace(Path(tmp) / f"{episode.name}.wav", out_dir / f"{source_id}.wav")
        rows.append(finish_row(out_dir, source_id, src, fingerprint, title=truth["title"], speaker="joe",
                               truth_path=f"{source_id}.truth.json", **common))
        _LOGGER.info("fetched %s (demo episode, %.1f s)", source_id, truth["duration_s"])
    # A recording of the target speaker, for speaker similarity in segment.
    source_id = "demo-reference"
    fingerprint = short_hash("demo", DEMO_VERSION, *REFERENCE_SENTENCES)
    kept = previous.get(source_id, fingerprint)
    if kept is not None:
        rows.append(kept)
    else:
        voice = voice or load_voice(alignments=True)
        write_reference(voice, out_dir / f"{source_id}.wav")
        rows.append(finish_row(out_dir, source_id, src, fingerprint, title="Reference sample of the target voice",
                               speaker="joe", role="reference", **common))
        _LOGGER.info("fetched %s (reference recording of the target voice)", source_id)
    return rows


def fetch_files(src: Source, out_dir: Path, previous: Previous, failures: list) -> list[dict]:
    rows = []
    for path in expand_folder(Path(src.origin), src.line):
        try:
            content = sha256_file(path)
            fingerprint = short_hash(content, src.trim)
            source_id = f"file-{fingerprint}"
            kept = previous.get(source_id, fingerprint)
            if kept is None:
                to_wav(path, out_dir / f"{source_id}.wav", src.start_s, src.end_s)
                kept = finish_row(out_dir, source_id, src, fingerprint, origin=str(path),
                                  title=src.meta.get("title") or path.stem)
                _LOGGER.info("fetched %s from %s", source_id, path)
            rows.append(kept)
        except (AudioError, OSError) as e:
            rows.extend(_keep_previous(previous, str(path), src, e, failures))
    return rows


def _keep_previous(previous: Previous, origin: str, src: Source, error: Exception, failures: list) -> list[dict]:
    """Report a failed item; what its origin brought in the last run stays (a bad new entry loses nothing).

    A full or read-only disk is no item's fault: it is raised again and stops the run.
    """
    if is_fatal(error):
        raise error
    kept = previous.of_origin(origin)
    _LOGGER.warning("skipped %s (line %d): %s%s", origin, src.line, error,
                    f"; its {len(kept)} item(s) from the last run are kept" if kept else "")
    failures.append({"line": src.line, "origin": origin, "reason": str(error),
                     "kept_from_last_run": [r["source_id"] for r in kept]})
    return kept


def _transient(error: Exception) -> bool:
    text = str(error)
    return any(s in text for s in ("HTTP Error 429", "HTTP Error 5", "timed out", "Timeout", "Connection", "Temporary"))


def _ydl_options(opts: FetchOptions, outtmpl: str, subtitles: tuple[str, ...] = (), flat: bool = False) -> dict:
    o = {
        "quiet": opts.quiet,
        "no_warnings": opts.quiet,
        "noprogress": True,
        "socket_timeout": opts.timeout_s,
        "retries": 0,  # retried here, with backoff, around the whole item
        "extractor_retries": 0,
        "outtmpl": outtmpl,
        "noplaylist": not flat,
    }
    if flat:
        o["extract_flat"] = "in_playlist"
    else:
        o["format"] = "bestaudio/best"
        o["postprocessors"] = [{"key": "FFmpegExtractAudio", "preferredcodec": "wav"}]
    if subtitles:
        o.update({"writesubtitles": True, "writeautomaticsub": False, "subtitleslangs": list(subtitles),
                  "subtitlesformat": "vtt/best"})
    if opts.rate_limit:
        o["ratelimit"] = _rate(opts.rate_limit)
    cookies = os.environ.get(COOKIES_ENV)
    if cookies:
        if not Path(cookies).exists():
            raise SourcesError(f"{COOKIES_ENV} names a cookies file that does not exist")
        o["cookiefile"] = cookies
    return o


def _rate(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def _with_retries(what: str, fn, opts: FetchOptions):
    import yt_dlp

    for attempt in range(opts.retries + 1):
        try:
            return fn()
        except yt_dlp.utils.DownloadError as e:
            if attempt == opts.retries or not _transient(e):
                raise ItemError(f"{what}: {str(e).replace('ERROR: ', '')}") from e
            wait = opts.backoff_s * 2**attempt
            _LOGGER.info("%s: %s; retrying in %.1f s (%d/%d)", what, str(e).replace("ERROR: ", ""), wait,
                         attempt + 1, opts.retries)
            time.sleep(wait)


def list_url(src: Source, opts: FetchOptions) -> tuple[list[str], str]:
    """The video URLs of a URL entry (itself, or a playlist's or channel's entries) and the playlist title."""
    import yt_dlp

    def flat():
        with yt_dlp.YoutubeDL(_ydl_options(opts, "%(id)s", flat=True)) as ydl:
            return ydl.extract_info(src.origin, download=False)

    info = _with_retries(src.origin, flat, opts) or {}
    if info.get("_type") in ("playlist", "multi_video") and info.get("entries") is not None:
        urls = [e.get("url") or e.get("webpage_url") for e in info["entries"] if e]
        return [u for u in urls if u], info.get("title") or src.origin
    return [src.origin], ""


def fetch_video(url: str, src: Source, out_dir: Path, opts: FetchOptions, playlist: str) -> dict:
    import yt_dlp

    source_id = f"url-{short_hash(url, src.trim)}"
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{source_id}-", dir=out_dir))
    try:
        def download():
            with yt_dlp.YoutubeDL(_ydl_options(opts, str(work / "audio.%(ext)s"), src.subtitles)) as ydl:
                return ydl.extract_info(url, download=True)

        info = _with_retries(url, download, opts) or {}
        produced = work / "audio.wav"
        if not produced.exists():
            raise ItemError(f"{url}: yt-dlp produced no audio")
        to_wav(produced, out_dir / f"{source_id}.wav", src.start_s, src.end_s)
        subs = []
        for vtt in sorted(work.glob("audio.*.vtt")):
            lang = vtt.name[len("audio."):-len(".vtt")]
            target = out_dir / f"{source_id}.{lang}.vtt"
            os.replace(vtt, target)
            subs.append(target.name)
        if src.subtitles and not subs:
            _LOGGER.info("%s: no human-made subtitles in %s", url, ", ".join(src.subtitles))
        return finish_row(out_dir, source_id, src, short_hash(url, src.trim), origin=url,
                          title=src.meta.get("title") or info.get("title") or source_id,
                          channel=info.get("channel") or info.get("uploader") or "",
                          upload_date=info.get("upload_date") or "", playlist=playlist,
                          license=src.meta.get("license") or info.get("license") or "",
                          subtitles=json.dumps(subs))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_urls(src: Source, out_dir: Path, opts: FetchOptions, previous: Previous, failures: list) -> list[dict]:
    known = previous.of_entry(src)
    if known and not any(r.get("playlist") for r in known):
        return known  # a single video fetched before: no request at all
    urls, playlist = list_url(src, opts)
    rows = []
    for url in urls:
        source_id = f"url-{short_hash(url, src.trim)}"
        kept = previous.get(source_id, short_hash(url, src.trim))
        if kept is not None:
            rows.append(kept)
            continue
        try:
            rows.append(fetch_video(url, src, out_dir, opts, playlist))
            _LOGGER.info("fetched %s from %s", source_id, url)
        except (ItemError, AudioError, OSError) as e:
            rows.extend(_keep_previous(previous, url, src, e, failures))
    return rows


def fetch_parquet(src: Source, out_dir: Path, previous: Previous, failures: list) -> list[dict]:
    """Rows of Parquet speech datasets (``audio`` struct of bytes/path, optional ``text``, ``speaker_id``)."""
    import pyarrow.parquet as pq

    root = Path(src.origin)
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
    rows = []
    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
            raise ItemError(f"{path}: not a readable Parquet file ({e})") from e
        names = set(pf.schema_arrow.names)
        if "audio" not in names:
            raise ItemError(f"{path}: no 'audio' column (expected a struct of bytes/path, as in CoRal and "
                            f"Hugging Face audio datasets); columns are {', '.join(sorted(names))}")
        content = sha256_file(path)
        columns = [c for c in ("audio", "text", "speaker_id") if c in names]
        index = 0
        # Row groups are streamed in small batches, so a multi-GB dataset never sits in memory.
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for record in batch.to_pylist():
                row_no, index = index, index + 1
                source_id = f"pq-{content[:12]}-{row_no:06d}"
                fingerprint = short_hash(content, str(row_no), src.trim)
                kept = previous.get(source_id, fingerprint)
                if kept is not None:
                    rows.append(kept)
                    continue
                try:
                    rows.append(_parquet_row(record, path, row_no, source_id, fingerprint, src, out_dir))
                except (AudioError, ItemError, OSError) as e:
                    rows.extend(_keep_previous(previous, f"{path}#row={row_no}", src, e, failures))
    return rows


def _parquet_row(record: dict, path: Path, row_no: int, source_id: str, fingerprint: str, src: Source,
                 out_dir: Path) -> dict:
    audio = record.get("audio") or {}
    data, name = audio.get("bytes"), audio.get("path")
    if data:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".tmp-pq-", suffix=Path(name or "a.wav").suffix) as f:
            f.write(data)
            f.flush()
            to_wav(Path(f.name), out_dir / f"{source_id}.wav", src.start_s, src.end_s)
    elif name and (path.parent / name).exists():
        to_wav(path.parent / name, out_dir / f"{source_id}.wav", src.start_s, src.end_s)
    else:
        raise ItemError(f"row {row_no} has neither audio bytes nor a readable audio path ({name!r})")
    return finish_row(out_dir, source_id, src, fingerprint, origin=f"{path}#row={row_no}",
                      title=src.meta.get("title") or f"{path.stem} row {row_no}", text=record.get("text") or "",
                      speaker=src.meta.get("speaker") or str(record.get("speaker_id") or ""))


# ------------------------------------------------------------------- main


class DownloadFailed(VoicemillError):
    """The run as a whole failed (no usable source, too many failures); the folder is as it was."""


def download(sources: list[Source], out_dir: Path, opts: FetchOptions) -> tuple[list[dict], list[dict], dict]:
    """Fetch every source into ``out_dir``, as one transaction; returns (rows, failures, counts).

    New files are fetched into a staging folder inside ``out_dir``. Only when
    the run is acceptable (at least one usable item, failures within
    ``opts.max_failed_share``) are they moved into place, the manifest
    rewritten and the items no longer listed removed; otherwise
    :class:`DownloadFailed` is raised and the previous manifest and every file
    it lists are untouched. ``failures.json`` is written either way. An entry
    that fails keeps what its source brought in the last run. ``counts`` says
    how many items were kept from the previous run, fetched now, and removed.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    previous = Previous(out_dir)
    rows: list[dict] = []
    failures: list[dict] = []
    staging = Path(tempfile.mkdtemp(prefix=".tmp-staging-", dir=out_dir))
    try:
        for src in tqdm(sources, desc="download", unit="source", disable=None):
            try:
                if src.kind == "demo":
                    rows.extend(fetch_demo(src, staging, opts, previous))
                elif src.kind == "file":
                    rows.extend(fetch_files(src, staging, previous, failures))
                elif src.kind == "url":
                    rows.extend(fetch_urls(src, staging, opts, previous, failures))
                elif src.kind == "parquet":
                    rows.extend(fetch_parquet(src, staging, previous, failures))
                else:
                    raise SourcesError(f"line {src.line}: unknown source kind {src.kind!r}")
            except (AudioError, ItemError, SourcesError, OSError) as e:
                # The entry failed as a whole (a playlist that could not be listed again, an unreadable
                # Parquet file): what it brought before stays, so a network hiccup never deletes data.
                rows.extend(_keep_previous(previous, src.origin, src, e, failures))

        unique: dict[str, dict] = {}
        for row in rows:
            if row["source_id"] in unique:
                _LOGGER.warning("%s has the same audio as %s; kept once", row["origin"],
                                unique[row["source_id"]]["origin"])
                continue
            unique[row["source_id"]] = row
        write_json(out_dir / "failures.json", failures)
        # Items kept only because their new entry failed are no success of this run.
        stand_ins = {sid for f in failures for sid in f.get("kept_from_last_run", ())}
        attempted = len(set(unique) - stand_ins) + len(failures)
        if not set(unique) - stand_ins:
            raise DownloadFailed(f"no usable source ({len(failures)} failed: see the warnings above and "
                                 f"{out_dir}/failures.json); {out_dir} is as the last run left it")
        if failures and len(failures) / attempted > opts.max_failed_share:
            raise DownloadFailed(
                f"{len(failures)} of {attempted} items failed, more than download.max_failed_share="
                f"{opts.max_failed_share}; fix or remove them in the sources file (reasons in "
                f"{out_dir}/failures.json); {out_dir} is as the last run left it")
        # Commit: the new files into place, then the manifest, then what is no longer listed goes.
        for path in sorted(staging.iterdir()):
            if path.is_file():
                os.replace(path, out_dir / path.name)
        manifest.write(pd.DataFrame(list(unique.values())), out_dir / "manifest.parquet", "sources")
        removed = _remove_stale(out_dir, set(unique))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fetched = sum(1 for sid in unique if sid not in previous.rows)
    counts = {"kept": len(unique) - fetched, "fetched": fetched, "removed": removed}
    return list(unique.values()), failures, counts


def _remove_stale(out_dir: Path, keep: set[str]) -> int:
    """Delete item files whose id is no longer listed; returns the number of items removed."""
    removed = set()
    for path in out_dir.iterdir():
        if path.name in ("manifest.parquet", "failures.json"):
            continue
        item = path.name.split(".")[0]
        if path.name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        elif item not in keep:
            path.unlink()
            removed.add(item)
    for item in sorted(removed):
        _LOGGER.info("removed %s: its source is no longer in the sources file", item)
    return len(removed)
