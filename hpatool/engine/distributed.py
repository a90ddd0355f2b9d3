"""The one reader of torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``): the
distributed context of a process and its device. torch is imported inside the functions that need
it, so the CLI's error line can ask for the rank without loading torch.

One process may train several runs (``hpatool cv``: one per fold): within
``keep_process_group()`` the process group outlives each run's ``DistContext.destroy`` and the
next run's ``init`` joins it, since a group cannot be initialised twice in one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpatool.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")

#: How many ``keep_process_group`` blocks are open: while any is, ``destroy`` keeps the group.
_kept = 0


def env_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` outside torchrun."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


@dataclass
class DistContext:
    """Rank and world size from torchrun's environment; initialises the process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialised: bool = False

    @classmethod
    def from_env(cls) -> DistContext:
        rank, world_size = env_rank()
        return cls(
            rank=rank,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=world_size,
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        """Join the process group (created on the first call in this process; an earlier
        run's group kept by ``keep_process_group`` is used again)."""
        if not self.distributed or self.initialised:
            return
        import torch
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if dist.is_available() and dist.is_initialized():
            self.initialised = True
            return
        dist.init_process_group(
            backend=backend, device_id=device if device.type == "cuda" else None
        )
        self.initialised = True

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """``value`` of rank 0, on every rank."""
        if not self.initialised:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.initialised:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def destroy(self) -> None:
        """Leave the process group: destroy it, unless a ``keep_process_group`` block is
        open (the next run of this process uses it again)."""
        if self.initialised:
            self.initialised = False
            if _kept:
                return
            _leave_group()


def _leave_group() -> None:
    """Destroy the process group once every rank has come here (gloo: waiting at most 60 s,
    so a rank that failed does not hold the others). Ranks that destroy it at different times
    can end the later one with a C++ ``terminate`` (exit -6) while gloo still talks to the
    earlier one."""
    import datetime

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        with contextlib.suppress(Exception):
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    dist.destroy_process_group()


@contextlib.contextmanager
def keep_process_group(ctx: DistContext, device: torch.device) -> Iterator[DistContext]:
    """Within the block, runs trained one after another in this process share one process
    group (``ctx``'s, initialised here); it is destroyed when the block ends."""
    global _kept
    ctx.init(device)
    _kept += 1
    try:
        yield ctx
    finally:
        _kept -= 1
        if _kept == 0 and ctx.distributed:
            _leave_group()
        ctx.initialised = False


def resolve_device(name: str, ctx: DistContext) -> torch.device:
    """The device of this process: ``cpu``, or the CUDA device of its local rank."""
    import torch

    if name not in DEVICES:
        raise UsageError(f"--device {name} is invalid; use one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", ctx.local_rank % max(1, torch.cuda.device_count()))
