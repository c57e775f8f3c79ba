"""Data-parallel training over several processes (GPUs, or CPU processes for tests) with ``torch.distributed``.

``train.devices`` says where a run trains:

- ``auto``: every visible CUDA GPU (one process each), else one CPU process;
- a count, ``"2"``: that many GPUs (the first ones), or on a machine
  without CUDA that many CPU processes on the gloo backend (slower than one:
  only for testing the distributed path);
- a list, ``"0,2"``: those CUDA devices;
- ``cpu``: one CPU process even where a GPU is visible.

Every rank builds the same model from the same seed (then rank 0's weights
are broadcast, so they match to the bit), draws the same batch order and
takes its own share of every step's batches; after each backward pass the
gradients are averaged across ranks in one coalesced all-reduce per side
(discriminator, generator), so every rank takes the same optimizer step and
the weights stay equal. That is what PyTorch's ``DistributedDataParallel``
does; its wrapper is not used because the loop calls coqui's
``Vits.train_step`` (not ``forward``) twice per step with parts frozen per
phase, which the wrapper's hooks do not follow. Rank 0 alone evaluates,
checkpoints and logs; the others wait at a barrier.

The processes are started by :func:`launch` (``torch.multiprocessing``), so
one command trains on every device: ``dvc repro`` as usual, or
``python -m stages.train``.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass

import torch

from voicemill.errors import VoicemillError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Devices:
    kind: str  # "cpu" | "cuda"
    ids: tuple[int, ...]  # CUDA device per rank; CPU: (0,) * world

    @property
    def world(self) -> int:
        return len(self.ids)

    def device(self, rank: int) -> torch.device:
        return torch.device(f"cuda:{self.ids[rank]}") if self.kind == "cuda" else torch.device("cpu")

    @property
    def backend(self) -> str:
        return "nccl" if self.kind == "cuda" else "gloo"


def resolve_devices(spec: str) -> Devices:
    """``train.devices`` -> the devices to train on (see the module docstring); a bad value is named."""
    spec = str(spec).strip().lower()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec in ("", "auto"):
        return Devices("cuda", tuple(range(cuda))) if cuda else Devices("cpu", (0,))
    if spec == "cpu":
        return Devices("cpu", (0,))
    try:
        numbers = [int(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise VoicemillError(f"train.devices {spec!r}: give 'auto', 'cpu', a count ('2') or CUDA device ids "
                             f"('0,1')") from None
    if not numbers:
        raise VoicemillError(f"train.devices {spec!r}: empty")
    if "," not in spec:  # a count
        (n,) = numbers
        if n < 1:
            raise VoicemillError(f"train.devices {spec!r}: the count must be at least 1")
        if not cuda:
            return Devices("cpu", (0,) * n)
        if n > cuda:
            raise VoicemillError(f"train.devices {n}: only {cuda} CUDA device(s) visible")
        return Devices("cuda", tuple(range(n)))
    if not cuda:
        raise VoicemillError(f"train.devices {spec!r} names CUDA devices, but none is visible here; "
                             f"use 'auto' or 'cpu'")
    bad = [i for i in numbers if not 0 <= i < cuda]
    if bad or len(set(numbers)) != len(numbers):
        raise VoicemillError(f"train.devices {spec!r}: CUDA devices are 0..{cuda - 1}, each at most once")
    return Devices("cuda", tuple(numbers))


def weights_digest(model) -> str:
    """sha256 of every parameter and buffer, to check that the ranks hold the same weights."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn, devices: Devices, *args) -> None:
    """Run ``fn(rank, devices, *args)`` once per rank, in new processes when there are several.

    A rank that fails fails the launch (``torch.multiprocessing`` raises with
    the rank's traceback); the caller turns that into the stage's error.
    """
    if devices.world == 1:
        fn(0, devices, *args)
        return
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    _LOGGER.info("training data-parallel on %d %s process(es) (%s backend)", devices.world, devices.kind,
                 devices.backend)
    mp.spawn(fn, args=(devices, *args), nprocs=devices.world, join=True)


class Group:
    """This process's place in the run: rank, world size, and the collective operations the loop needs."""

    def __init__(self, rank: int, devices: Devices):
        self.rank, self.world, self.devices = rank, devices.world, devices
        self.device = devices.device(rank)
        if self.world > 1:
            import torch.distributed as dist

            if devices.kind == "cuda":
                torch.cuda.set_device(self.device)
            # Rank 0 evaluates and checkpoints while the others wait: a generous timeout.
            dist.init_process_group(devices.backend, rank=rank, world_size=self.world,
                                    timeout=datetime.timedelta(hours=2))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_model(self, model) -> None:
        """Rank 0's parameters and buffers to every rank."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list) -> None:
        """Average ``params``' gradients over the ranks in one coalesced all-reduce (missing ones count as 0)."""
        if self.world == 1 or not params:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on rank 0 (stop decisions are rank 0's)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return int(value)
        import torch.distributed as dist

        t = torch.tensor([int(value)], dtype=torch.long, device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def gather(self, value) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
