"""Where the data stages do their work: this machine's process pool, or a Ray cluster.

DVC stays the orchestrator: a stage reads its inputs, hands its items to an
executor, and writes its outputs itself (atomically, as always). Only the
work in between fans out, so the outputs are the same whichever executor ran
(``common.executor`` is not a stage param in ``dvc.yaml`` for that reason).

- :class:`Local` (``common.executor: local``): items in a spawned process
  pool (one per core), or in this process when there is one item or one
  worker; workers that hold a model (:meth:`Executor.on_workers`) are one
  instance in this process.
- :class:`Ray` (``common.executor: ray``): items as Ray tasks, model holders
  as Ray actors (each loads its model once), on the cluster that
  ``ray.address`` names (``local`` starts one inside the stage). A worker
  that dies is replaced and its item tried again, up to ``ray.max_retries``
  times; an item that raises is not retried. Every node must see the data
  folders at the same path (a shared filesystem) and have voicemill
  installed (see the README, "On a Ray cluster").

Both return one ``(value, error)`` per item, in the items' order: ``error``
is ``None``, or a one-line reason that the stage reports with the item like
any bad input. One progress bar counts the items (or their ``weights``) as
they finish, wherever they ran.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from tqdm import tqdm

from voicemill import params
from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger(__name__)

Outcome = tuple[Any, "str | None"]


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


class Executor:
    name = ""

    def map(self, fn: Callable, items: Sequence, *, desc: str, unit: str, cpus: float = 1.0,
            workers: int = 0) -> list[Outcome]:
        """``fn(item)`` for every item (``fn`` must be importable by name: a module-level function)."""
        raise NotImplementedError

    def on_workers(self, factory: Callable, method: str, items: Sequence, *, desc: str, unit: str,
                   weights: Sequence[int] | None = None, cpus: float = 1.0, gpus: float = 0.0,
                   workers: int = 0) -> list[Outcome]:
        """``factory()`` once per worker (a model loads once), then ``getattr(worker, method)(item)`` per item."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the cluster (or the models held here)."""


class Local(Executor):
    name = "local"

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1
        self._holders: dict = {}  # one per distinct factory call: a model loads once per stage

    def _holder(self, factory: Callable):
        key = (factory.func, factory.args, tuple(sorted(factory.keywords.items()))) if isinstance(
            factory, functools.partial) else factory
        if key not in self._holders:
            self._holders[key] = factory()
        return self._holders[key]

    def map(self, fn, items, *, desc, unit, cpus=1.0, workers=0):
        out: list[Outcome] = [(None, "not run")] * len(items)
        n = min(workers or self.workers, len(items))
        with tqdm(total=len(items), desc=desc, unit=unit, disable=None) as bar:
            if n <= 1:
                for i, item in enumerate(items):
                    out[i] = _call(fn, item)
                    bar.update()
                return out
            # spawn: workers start clean (no inherited torch/onnx threads).
            with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    try:
                        out[futures[future]] = future.result()
                    except BrokenProcessPool as e:  # a worker process died: its items are lost
                        out[futures[future]] = (None, f"its worker process died ({_reason(e)})")
                    bar.update()
        return out

    def on_workers(self, factory, method, items, *, desc, unit, weights=None, cpus=1.0, gpus=0.0, workers=0):
        weights = list(weights) if weights is not None else [1] * len(items)
        out: list[Outcome] = []
        holder = self._holder(factory) if items else None
        with tqdm(total=sum(weights), desc=desc, unit=unit, disable=None) as bar:
            for item, w in zip(items, weights):
                out.append(_call(getattr(holder, method), item))
                bar.update(w)
        return out

    def close(self) -> None:
        self._holders.clear()


def _call(fn: Callable, item) -> Outcome:
    """``fn(item)``; an exception costs this item only (its message becomes the item's error), except
    an OSError: a full disk or a read-only folder is no item's fault, and fails the stage."""
    try:
        return fn(item), None
    except VoicemillError as e:
        return None, str(e)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - reported with the item; the traceback goes to the debug log
        _LOGGER.debug("item failed", exc_info=True)
        return None, f"unexpected {_reason(e)} (rerun with --debug for the traceback)"


class _Holder:
    """A Ray actor around whatever ``factory`` builds (a loaded model)."""

    def __init__(self, factory: Callable):
        self.obj = factory()

    def call(self, method: str, item) -> Outcome:
        return _call(getattr(self.obj, method), item)


class Ray(Executor):
    name = "ray"

    def __init__(self, opts: params.RayParams):
        try:
            import ray
        except ImportError as e:
            raise VoicemillError("common.executor is 'ray' but Ray is not installed; "
                                 "pip install 'ray==2.60.0' (requirements.txt pins it)") from e
        self.ray = ray
        self.opts = opts
        self.started = False
        if not ray.is_initialized():
            address = None if opts.address == "local" else opts.address
            # The workers import voicemill from the same checkout when the cluster runs on this machine.
            repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH", "")]))}
            try:
                context = ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True,
                                   runtime_env={"env_vars": env}, include_dashboard=None)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise VoicemillError(
                    f"could not reach the Ray cluster at ray.address {opts.address!r} ({_reason(e)}); start one "
                    "with 'ray start --head' and give its address, or use 'local'") from e
            self.started = True
            dashboard = getattr(context, "dashboard_url", "") or ""
            resources = ray.cluster_resources()
            _LOGGER.info("Ray cluster %s: %d node(s), %g CPU(s), %g GPU(s)%s",
                         "started here" if address is None else opts.address, len(ray.nodes()),
                         resources.get("CPU", 0), resources.get("GPU", 0),
                         f"; dashboard http://{dashboard}" if dashboard else "")

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def _failure(self, e: BaseException) -> str:
        exc = self.ray.exceptions
        if isinstance(e, exc.RayTaskError):
            cause = getattr(e, "cause", None)
            return str(cause) if isinstance(cause, VoicemillError) else _reason(cause or e)
        if isinstance(e, (exc.WorkerCrashedError, exc.ActorDiedError, exc.NodeDiedError, exc.ObjectLostError)):
            return f"its Ray worker died {self.opts.max_retries + 1} time(s) ({type(e).__name__})"
        return _reason(e)

    def _gather(self, refs: dict, out: list, bar, weights) -> None:
        """Wait for any of ``refs`` (ref -> item index); record it and move the bar."""
        ready, _ = self.ray.wait(list(refs), num_returns=1)
        for ref in ready:
            i = refs.pop(ref)
            try:
                out[i] = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, OSError):
                    raise e.cause from None  # as the local pool does: the stage fails with it
                out[i] = (None, self._failure(e))
            except Exception as e:  # noqa: BLE001 - a dead worker costs its item
                out[i] = (None, self._failure(e))
            bar.update(weights[i])

    def map(self, fn, items, *, desc, unit, cpus=1.0, workers=0):
        remote = self.ray.remote(_call).options(num_cpus=cpus, max_retries=self.opts.max_retries,
                                                retry_exceptions=False, name=getattr(fn, "__name__", "task"))
        fn_ref = self.ray.put(fn)
        refs = {remote.remote(fn_ref, item): i for i, item in enumerate(items)}
        out: list[Outcome] = [(None, "not run")] * len(items)
        with tqdm(total=len(items), desc=f"{desc} (ray)", unit=unit, disable=None) as bar:
            while refs:
                self._gather(refs, out, bar, [1] * len(items))
        return out

    def on_workers(self, factory, method, items, *, desc, unit, weights=None, cpus=1.0, gpus=0.0, workers=0):
        weights = list(weights) if weights is not None else [1] * len(items)
        out: list[Outcome] = [(None, "not run")] * len(items)
        if not items:
            return out
        resources = self.ray.cluster_resources()
        fit = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // cpus)
        n = max(1, min(len(items), workers or fit or 1))
        actor = self.ray.remote(_Holder).options(num_cpus=cpus, num_gpus=gpus, max_restarts=self.opts.max_retries,
                                                 max_task_retries=self.opts.max_retries)
        holders = [actor.remote(factory) for _ in range(n)]
        _LOGGER.info("%s: %d Ray worker(s), %g CPU and %g GPU each", desc, n, cpus, gpus)
        queue = list(range(len(items)))[::-1]
        refs: dict = {}
        busy: dict = {}  # ref -> the worker it runs on
        idle: set[int] = set()

        def submit(h):
            i = queue.pop()
            ref = holders[h].call.remote(method, items[i])
            refs[ref], busy[ref] = i, h

        def let_go_of_idle():
            # Out of work: free its CPUs/GPUs now, so that a worker restarting after a crash (its node
            # gone) finds room, and the items it holds do not wait for ever.
            for h in set(range(n)) - set(busy.values()) - idle:
                self.ray.kill(holders[h])
                idle.add(h)

        try:
            with tqdm(total=sum(weights), desc=f"{desc} (ray)", unit=unit, disable=None) as bar:
                for _ in range(2):  # one running and one waiting per worker: no idle gap between items
                    for h in range(n):
                        if queue:
                            submit(h)
                while refs:
                    if not queue:
                        let_go_of_idle()
                    before = set(refs)
                    self._gather(refs, out, bar, weights)
                    for ref in before - set(refs):
                        h = busy.pop(ref)
                        if queue:
                            submit(h)
        finally:
            for h in holders:
                self.ray.kill(h)
        return out


def make(common: params.CommonParams, ray_opts: params.RayParams, workers: int = 0) -> Executor:
    """The executor ``common.executor`` names."""
    if common.executor == "ray":
        return Ray(ray_opts)
    return Local(workers)
