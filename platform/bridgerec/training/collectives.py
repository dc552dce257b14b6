"""The one place bridgerec calls ``torch.distributed`` collectives.

Under NCCL every tensor handed to a collective must live on the process group's device (the
rank's current CUDA device); under gloo, on the CPU. Calling ``dist.broadcast`` on a CPU tensor
works on a CPU cluster and crashes on a GPU one, so nothing outside this module calls a collective
directly (``tests/training/test_collectives.py`` reads the sources and fails if something does).
Every helper is a no-op returning its input when no process group is initialised (one process).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = ["group_device", "is_distributed", "broadcast_flag", "all_gather_objects", "all_reduce_sum", "same_on_all_ranks"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def group_device() -> torch.device:
    """The device collectives of the default process group run on: CUDA for NCCL, else CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s ``flag`` on every rank (e.g. rank 0's early-stopping decision)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=group_device())
    dist.broadcast(t, src=src)
    return bool(t.item())


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64 on the group's device)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=group_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape and dtype on every rank), in rank order, on ``t``'s device;
    the collective runs on the group's device."""
    if not is_distributed():
        return [t]
    local = t.to(group_device())
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [o.to(t.device) for o in out]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable, small: hashes, counts), in rank order.

    ``all_gather_object`` serialises through tensors on the current CUDA device under NCCL, so
    the caller's CUDA device must be set (Ray Train does it); it is only called from here."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def same_on_all_ranks(module: torch.nn.Module) -> bool:
    """True when every parameter of ``module`` is bitwise equal on all ranks (a checksum each:
    sum and sum of squares per tensor, compared through a gather)."""
    sums = [(float(p.detach().double().sum()), float(p.detach().double().pow(2).sum())) for p in module.parameters()]
    gathered = all_gather_objects(sums)
    return all(g == gathered[0] for g in gathered)
