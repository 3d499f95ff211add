"""Data-parallel helpers: every one of them is a no-op in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over all ranks."""
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, for all ranks (a wall-clock limit must stop every rank at the same step)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (an interrupt that reached one rank stops all)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if world()[1] == 1:
        return [obj]
    gathered: list[object] = [None] * world()[1]
    dist.all_gather_object(gathered, obj)
    return gathered
