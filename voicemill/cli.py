"""Shared command-line plumbing for the stage scripts."""

from __future__ import annotations

import argparse
import logging
from typing import Callable

from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger("voicemill")


class StageError(VoicemillError):
    """A fatal stage error whose message already names the item and the fix."""


def parser(doc: str, stage: str) -> argparse.ArgumentParser:
    """An argument parser whose help is the stage's docstring, then the params it reads (from their declarations)."""
    from voicemill.params import help_text

    p = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc, epilog=help_text(stage),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    return p


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    if not debug:
        for noisy in ("numba", "matplotlib", "faster_whisper", "TTS", "trainer", "fsspec", "urllib3", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run(stage: str, fn: Callable[[], None], debug: bool) -> int:
    """Run a stage body; a known error becomes one clear line and exit code 1."""
    from voicemill.fsutil import describe_os_error

    known = (VoicemillError, FileNotFoundError, ValueError)
    try:
        fn()
    except known as e:
        if debug:
            _LOGGER.exception("%s failed", stage)
        _LOGGER.error("%s failed: %s", stage, e)
        return 1
    except OSError as e:  # disk full, read-only, permissions: the path and the fix, not a traceback
        if debug:
            _LOGGER.exception("%s failed", stage)
        if e.filename is None and _OUTPUTS:
            e = OSError(e.errno, e.strerror, f"writing {', '.join(map(str, _OUTPUTS))}")
        _LOGGER.error("%s failed: %s", stage, describe_os_error(e))
        return 1
    return 0


#: The outputs of the stage running in this process (named when an OS error names no path).
_OUTPUTS: list = []


def sweep(stage: str, *outputs) -> None:
    """Remove what interrupted runs of this stage left behind next to and inside its outputs."""
    from pathlib import Path

    from voicemill.fsutil import sweep_stale

    _OUTPUTS[:] = [o for o in outputs if o]
    removed = sweep_stale(*[Path(o) for o in outputs if o])
    if removed:
        _LOGGER.info("%s: removed %d leftover(s) of an interrupted run", stage, removed)


