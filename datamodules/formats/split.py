"""Which (rank, dataloader worker) consumer reads which part of a shard stream.

Every consumer computes the same plan from the same shard list, so the union of
what they read is the whole stream, each item exactly once. Whole shards are
dealt out when there are enough of them (each consumer reads only its files);
with fewer shards than consumers every consumer reads the stream and keeps
every n-th sample, which costs reading but loses and duplicates nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist
from torch.utils.data import get_worker_info


@dataclass(frozen=True)
class Consumer:
    """One reader of the stream: ``index`` in ``range(count)``."""

    index: int = 0
    count: int = 1


def current_consumer(
    rank: int | None = None,
    world_size: int | None = None,
    worker: int | None = None,
    num_workers: int | None = None,
) -> Consumer:
    """This process's consumer; each argument left out is read from the environment.

    Rank and world size come from ``torch.distributed`` when it is initialised,
    else from ``RANK``/``WORLD_SIZE`` (set by torchrun before init), else 0/1.
    The worker comes from ``torch.utils.data.get_worker_info()``.
    """
    if rank is None or world_size is None:
        if dist.is_available() and dist.is_initialized():
            found_rank, found_world = dist.get_rank(), dist.get_world_size()
        else:
            found_rank = int(os.environ.get("RANK", 0))
            found_world = int(os.environ.get("WORLD_SIZE", 1))
        rank = found_rank if rank is None else rank
        world_size = found_world if world_size is None else world_size
    if worker is None or num_workers is None:
        info = get_worker_info()
        worker = (info.id if info else 0) if worker is None else worker
        num_workers = (info.num_workers if info else 1) if num_workers is None else num_workers
    return Consumer(rank * num_workers + worker, world_size * num_workers)


def splits_by_shard(n_shards: int, consumer: Consumer) -> bool:
    """Deal whole shards when every consumer can get at least one."""
    return n_shards >= consumer.count


def assigned_to(position: int, consumer: Consumer) -> bool:
    """Whether the shard (or sample) at ``position`` belongs to ``consumer``."""
    return position % consumer.count == consumer.index


@dataclass(frozen=True)
class WorkerStart:
    """Where a DataLoader worker starts a pass: it reads as worker ``reads_as`` (whose share
    of the stream it takes) and drops the first ``skip`` items of that share."""

    reads_as: int
    skip: int
