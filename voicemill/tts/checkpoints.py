"""Training checkpoints that survive a ``kill -9``: written whole or not at all, the last few kept.

A checkpoint folder (``models/checkpoints``, a DVC ``persist`` output) holds:

- ``run.json``: what the checkpoints belong to (:func:`run_identity`: the
  preset, ``init_from``, the dataset's fingerprint, the seed and every train
  param that changes the path a run takes). A run whose identity differs
  starts fresh and says which keys changed; one whose identity matches
  resumes from the newest complete checkpoint. Params that only say how far
  to go (``max_steps``, ``epochs``, ``patience``) or how often to look
  (``eval_every``, ``checkpoint_every``, ``keep_checkpoints``) are not part
  of it: raising ``max_steps`` continues a finished run. Each checkpoint also
  records the training code's fingerprint (:func:`code_fingerprint`): an
  unfinished run resumes across a code change (a fix to go on with, said in
  the log), a finished one trained by other code starts fresh.
- ``step-000200/state.pth``: the model (discriminator included), the
  optimizers, the batch order, the step, and the evaluation history. A
  checkpoint is written into a temporary folder, flushed to disk, then
  renamed: a folder named ``step-*`` is whole, and one that still fails to
  load (a disk that lied) is skipped for the one before it.
- ``eval/step-000200/*.wav``: the held-out sentences as the voice spoke them
  at that evaluation (kept for every evaluation; a few MB each), with
  ``scores.json``.

The last ``keep`` checkpoints are kept, and the best one by the listening
composite is never deleted while it is the best.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from voicemill.errors import VoicemillError
from voicemill.fsutil import write_json

_LOGGER = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{6,})$")

#: Train params that do not change what a step does (how far, how often, where, with what hardware).
NOT_IDENTITY = frozenset({"epochs", "max_steps", "patience", "eval_every", "eval_sentences", "checkpoint_every",
                          "keep_checkpoints", "num_threads", "devices", "precision"})


def run_identity(options: dict, dataset_fingerprint: str) -> dict:
    """The keys a checkpoint must match to be resumed: every option outside :data:`NOT_IDENTITY`."""
    ident = {k: v for k, v in sorted(options.items()) if k not in NOT_IDENTITY}
    ident["dataset"] = dataset_fingerprint
    return json.loads(json.dumps(ident, default=list))  # tuples as lists: comparable with what was read back


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of one run in ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path, keep: int = 3):
        self.root = Path(root)
        self.keep = max(1, keep)

    # ---------------------------------------------------------------- identity

    def open(self, identity: dict) -> bool:
        """Adopt ``root`` for a run of ``identity``; returns True when its checkpoints can be resumed.

        Checkpoints of another run are deleted, with a log line naming what changed.
        """
        ident_file = self.root / "run.json"
        if self.root.exists() and not ident_file.exists() and any(self.root.iterdir()):
            raise VoicemillError(f"{self.root} holds files but no run.json, so it is not a checkpoints folder "
                                 f"train wrote; give another --checkpoints folder (or empty this one)")
        old = json.loads(ident_file.read_text()) if ident_file.exists() else None
        if old == identity and self.steps():
            return True
        if old is not None and old != identity and self.root.exists():
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            _LOGGER.warning("starting fresh: the checkpoints in %s belong to another run (%s changed)", self.root,
                            ", ".join(f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in changed))
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        write_json(ident_file, identity)
        return False

    def clear(self, identity: dict, why: str) -> None:
        """Delete every checkpoint and start this folder afresh for ``identity``."""
        _LOGGER.warning("starting fresh: %s", why)
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        write_json(self.root / "run.json", identity)

    # ---------------------------------------------------------------- checkpoints

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:06d}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.root.exists():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir()
                      if (m := _NAME.match(p.name)) and (p / "state.pth").exists())

    def save(self, step: int, state: dict) -> Path:
        """Write a checkpoint whole (temporary folder, fsync, rename); returns its folder."""
        final = self.path(step)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.root))
        try:
            with open(tmp / "state.pth", "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def load(self, step: int) -> dict:
        return torch.load(self.path(step) / "state.pth", map_location="cpu", weights_only=False)

    def latest(self) -> tuple[int, dict] | None:
        """The newest checkpoint that loads, or None; unreadable ones are named and passed over."""
        for step in reversed(self.steps()):
            try:
                return step, self.load(step)
            except Exception as e:  # noqa: BLE001 - a torn or corrupt file: fall back to the one before
                _LOGGER.warning("checkpoint %s is unreadable (%s); trying the one before", self.path(step), e)
        return None

    def prune(self, protect: set[int] = frozenset()) -> list[int]:
        """Delete all but the newest ``keep`` checkpoints (and ``protect``) and stale temporary folders."""
        steps = self.steps()
        doomed = [s for s in steps[:-self.keep] if s not in protect]
        for s in doomed:
            shutil.rmtree(self.path(s), ignore_errors=True)
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return doomed

    def discard_after(self, step: int) -> None:
        """Forget evaluations newer than the checkpoint a run resumes from (they will be redone)."""
        for p in (self.root / "eval").glob("step-*") if (self.root / "eval").exists() else []:
            m = _NAME.match(p.name)
            if m and int(m.group(1)) > step:
                shutil.rmtree(p, ignore_errors=True)

    def eval_dir(self, step: int) -> Path:
        return self.root / "eval" / f"step-{step:06d}"


#: The modules whose code decides what a run trains and which checkpoint it picks.
TRAINING_CODE = ("training.py", "listening.py", "presets.py", "piper_import.py", "phonemes.py")


def code_fingerprint() -> str:
    """sha256 of :data:`TRAINING_CODE`: a finished run trained by other code is not resumed (see train)."""
    import hashlib

    h = hashlib.sha256()
    for name in TRAINING_CODE:
        h.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def dataset_fingerprint(dataset_dir: Path) -> str:
    """sha256 over the split files, phonemes.csv and every training clip's audio (what a step reads)."""
    import hashlib

    from voicemill.fsutil import sha256_file
    from voicemill.tts.coqui import read_metadata

    dataset_dir = Path(dataset_dir)
    h = hashlib.sha256()
    for name in ("metadata_train.csv", "metadata_val.csv", "phonemes.csv"):
        path = dataset_dir / name
        h.update(f"{name}\t{sha256_file(path) if path.exists() else '-'}\n".encode())
    for clip_id, _raw, _norm in read_metadata(dataset_dir / "metadata_train.csv"):
        h.update(f"{clip_id}\t{sha256_file(dataset_dir / 'wavs' / f'{clip_id}.wav')}\n".encode())
    return h.hexdigest()
