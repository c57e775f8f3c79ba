"""Atomic file writes: an interrupted run never leaves a half-written output.

Every file a stage writes goes through :func:`atomic_path`: the caller writes a
temporary file in the same directory, which is renamed over the final name
only when the ``with`` block succeeds. A crash leaves at most a ``.tmp-*``
file, which no reader mistakes for a finished output.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{final.stem}-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual mode
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as e:
        full = _disk_full_error(e, final)
        tmp.unlink(missing_ok=True)
        if full is not None:
            raise full from e
        raise


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; it replaces ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders; outputs get the usual mode
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        full = _disk_full_error(e, final)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from e
        raise


#: Less free space than this after a failed write means the write failed for want of space.
_FULL_BYTES = 256 << 10


def _disk_full_error(error: BaseException, final: Path) -> OSError | None:
    """An ENOSPC OSError naming ``final`` when a writer (libsndfile, pyarrow, torch) failed on a full disk
    with an error of its own ("System error"); None otherwise."""
    if isinstance(error, OSError) or not isinstance(error, Exception):
        return None
    try:
        if shutil.disk_usage(final.parent).free >= _FULL_BYTES:
            return None
    except OSError:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))


def without_nan(value):
    """NaN and infinities become None (null in JSON), which DVC and browsers can read."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON (NaN and infinities as null), atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(without_nan(data), indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's contents, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: OS errors that no retry or other item can get past: the stage stops with one line naming the path.
FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}

#: What to do about each fatal error, for the one-line message.
_FIXES = {
    errno.ENOSPC: "the disk is full: free space there (or point the stage at a bigger disk) and rerun",
    errno.EDQUOT: "the disk quota is used up: free space there and rerun",
    errno.EFBIG: "the file is larger than this file system or process allows",
    errno.EROFS: "the folder is on a read-only file system: make it writable or choose another output folder",
    errno.EACCES: "permission denied: make the folder writable for this user (or choose another one)",
    errno.EPERM: "operation not permitted: check the folder's owner and permissions",
}


def is_fatal(error: BaseException) -> bool:
    """Whether an OS error is about the machine (disk full, read-only), not about one item."""
    return isinstance(error, OSError) and error.errno in FATAL_ERRNOS


def describe_os_error(error: OSError) -> str:
    """One line: the path, what went wrong and the fix."""
    where = error.filename if error.filename is not None else "(no path)"
    fix = _FIXES.get(error.errno, "")
    return f"{where}: {error.strerror or error}" + (f"; {fix}" if fix else "")


def raise_fatal_os_error(tool_stderr: str, path: Path) -> None:
    """Raise the OSError a tool (ffmpeg) reported in its stderr when it is about the disk, not the input."""
    for text, code in (("No space left on device", errno.ENOSPC), ("Read-only file system", errno.EROFS),
                       ("Disk quota exceeded", errno.EDQUOT)):
        if text in tool_stderr:
            raise OSError(code, os.strerror(code), str(path))


def sweep_stale(*outputs: Path) -> int:
    """Delete what interrupted runs left behind for these outputs; returns how many were removed.

    :func:`atomic_path` and :func:`atomic_dir` make ``.tmp-<name>-*`` next to
    an output, and stages make ``.tmp-*`` inside an output folder; a process
    killed mid-write leaves them. A stage calls this for its outputs at start
    (DVC runs one stage at a time in a workspace).
    """
    removed = 0
    for out in map(Path, outputs):
        candidates = []
        if out.parent.is_dir():
            candidates += [p for p in out.parent.glob(f".tmp-{out.stem}-*")]
            if out.suffix:
                candidates += [p for p in out.parent.glob(f".tmp-{out.name}-*")]
        if out.is_dir():
            candidates += list(out.glob(".tmp-*"))
        for path in set(candidates):
            try:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """OS errors of plain writes to ``path`` that name no file (a full disk) name it."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def read_text_file(path: Path, error: type[Exception], hint: str) -> str:
    """A UTF-8 text file; a folder or binary content raise ``error`` naming the path, then ``hint`` (what
    belongs there)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; {hint}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a text file ({e.reason} at byte {e.start}); {hint}") from None
