"""Several training processes under ``torchrun``: who this process is, and the collectives used.

Under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the environment)
one process runs per GPU (or per CPU share); :func:`process_group` joins them
(NCCL on GPUs, gloo on CPU) and leaves the group on exit. With one process every
helper here is a no-op, so the trainer calls them unconditionally.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from harness.errors import HarnessError


@dataclass(frozen=True)
class DistInfo:
    """This process's place among ``world`` processes (``rank``; ``local_rank`` on its node)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _env_int(env, name: str, default: int, minimum: int) -> int:
    text = str(env.get(name, "") or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise HarnessError(f"environment variable {name}={text!r} is not an integer >= {minimum}; "
                           "unset WORLD_SIZE, RANK and LOCAL_RANK, or launch with torchrun")
    return value


def dist_from_env(env: dict | None = None) -> DistInfo:
    """The process layout torchrun announces in ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``.

    A layout torchrun would not set is one :class:`HarnessError` line: a value
    that is not a number or out of range, or several processes announced
    without the ``MASTER_ADDR``/``MASTER_PORT`` they meet at (a stale
    ``WORLD_SIZE`` left in the shell, say).
    """
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1, 1)
    rank = _env_int(env, "RANK", 0, 0)
    local = _env_int(env, "LOCAL_RANK", rank, 0)
    if rank >= world:
        raise HarnessError(f"environment variable RANK={rank} is not below WORLD_SIZE={world}; "
                           "unset WORLD_SIZE, RANK and LOCAL_RANK, or launch with torchrun")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if world > 1 and missing:
        raise HarnessError(f"WORLD_SIZE={world} is set but {' and '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not: not a torchrun launch "
                           "(a stale environment?); unset WORLD_SIZE, RANK and LOCAL_RANK, or "
                           "launch with torchrun")
    return DistInfo(world, rank, local)


@contextmanager
def process_group(dist: DistInfo, device: torch.device) -> Iterator[None]:
    """Join the default process group for the body (NCCL on CUDA, else gloo); leave it after."""
    if not dist.enabled:
        yield
        return
    import torch.distributed as tdist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def gather_objects(obj: Any, dist: DistInfo) -> list:
    """``obj`` of every process, in rank order (a collective: every rank must call it)."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as tdist

    out = [None] * dist.world
    tdist.all_gather_object(out, obj)
    return out


def mean_over_processes(values: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """The element-wise mean of ``values`` over all processes (in place; a collective)."""
    if dist.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(values)
        values /= dist.world
    return values


def any_process(flag: bool, dist: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is true in any process (a collective: every rank must call it)."""
    if not dist.enabled:
        return bool(flag)
    import torch.distributed as tdist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
    return bool(value.item())


def barrier(dist: DistInfo) -> None:
    """Wait for every process (a no-op with one)."""
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
