"""Collectives that objectives and evaluation share.

Gathers accept a different batch size on every rank (a skipped corrupt sample
makes one rank's batch smaller), by padding to the largest and trimming; a
rank with no rows at all (no evaluation batch) takes part with empty tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_rows(rows: int, device: torch.device) -> list[int]:
    """Every rank's ``rows``, in rank order: one small collective, one host sync."""
    _, world_size = world()
    if world_size == 1:
        return [rows]
    size = torch.tensor([rows], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _pad(x: Tensor, length: int) -> Tensor:
    if x.shape[0] == length:
        return x
    return torch.cat([x, x.new_zeros((length - x.shape[0], *x.shape[1:]))])


def gather_with_grad(x: Tensor, sizes: list[int] | None = None) -> tuple[Tensor, int]:
    """All ranks' rows concatenated in rank order, and where this rank's rows start.

    The backward pass sums every rank's gradient into the owner of each row, so
    a loss over local rows × all columns gives exactly the gradients of the
    global-batch loss once DDP averages them (the open_clip
    ``local_loss + gather_with_grad`` mode, ``shared/specs/frameworks.md`` §2).
    ``sizes``: every rank's rows when the caller knows them (:func:`rank_rows`).
    """
    rank, world_size = world()
    if world_size == 1:
        return x, 0
    sizes = sizes or rank_rows(x.shape[0], x.device)
    parts = dist_fn.all_gather(_pad(x, max(sizes)))
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]), sum(sizes[:rank])


@torch.no_grad()
def gather_no_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """All ranks' rows concatenated in rank order, outside autograd (queues, metrics);
    ``sizes`` as for :func:`gather_with_grad`."""
    _, world_size = world()
    if world_size == 1:
        return x
    sizes = sizes or rank_rows(x.shape[0], x.device)
    parts = [torch.empty_like(_pad(x, max(sizes))) for _ in range(world_size)]
    dist.all_gather(parts, _pad(x, max(sizes)).contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def global_mean(total: Tensor, count: int | Tensor) -> Tensor:
    """``total`` over the ``count`` summed over ranks, times the world size.

    For losses averaged over a varying number of positions per rank (masked
    tokens, LM targets): DDP then averages gradients over ranks, which gives
    exactly the global batch's mean, as one process on the whole batch would.
    A zero count everywhere gives 0 with the graph kept.
    """
    count = torch.as_tensor(count, device=total.device).detach().reshape(1).clone()
    _, world_size = world()
    if world_size > 1:
        dist.all_reduce(count)
    return total * world_size / count.sum().clamp_min(1)


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on some rank: every rank gets the same answer, so all can
    take the same branch (e.g. skip a step) and their collectives stay in lockstep."""
    _, world_size = world()
    if world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable Python data such as strings), in rank order."""
    _, world_size = world()
    if world_size == 1:
        return [value]
    values: list[Any] = [None] * world_size
    dist.all_gather_object(values, value)
    return values


def gather_fields(fields: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """:func:`gather_no_grad` of each named tensor, over the names any rank has.

    A rank that lacks a field (it had no evaluation batch, or none carrying it)
    joins that gather with zero rows of the field's trailing shape and dtype,
    learnt from the ranks that have it; otherwise its rank-mates would wait for
    it forever. ``device`` holds those empty tensors.
    """
    _, world_size = world()
    if world_size == 1:
        return dict(fields)
    schemas: list[dict[str, tuple[tuple[int, ...], torch.dtype]]] = [{}] * world_size
    dist.all_gather_object(schemas, {n: (tuple(v.shape[1:]), v.dtype) for n, v in fields.items()})
    merged = {name: spec for schema in reversed(schemas) for name, spec in schema.items()}
    gathered = {}
    for name in sorted(merged):
        shape, dtype = merged[name]
        local = fields.get(name)
        if local is None:
            local = torch.empty((0, *shape), dtype=dtype, device=device)
        gathered[name] = gather_no_grad(local)
    return gathered
