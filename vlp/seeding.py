"""Random draws as functions of what they are about, so a resumed run replays them exactly.

A training sample's draws (crop, colours, caption choice, masks) follow from its key
(data seed, epoch, pass, index); a training step's draws (dropout, hard negatives, MLM
masks) from (seed, batch, rank). Nothing depends on how many draws came before,
which a checkpoint cannot restore: the global generators' states, per worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def mix(*key: int) -> int:
    """A seed from integers; ``hash`` of a tuple of ints is the same in every process and run."""
    return hash(key) % 2**63


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from ``key``."""
    return torch.Generator().manual_seed(mix(*key))


@contextmanager
def seeded_cpu(key: int) -> Iterator[None]:
    """Run the block with the CPU global generator seeded from ``key``, restoring it after.

    For code that draws from the global generator (torchvision's transforms), in data
    workers; CUDA's generators are left alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix(key))
        yield


def run_seed() -> int:
    """The seed ``seed_everything`` gave this run (Lightning exports it to every process)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def seed_step(batch: int, rank: int) -> None:
    """Seed the global generators (CPU and CUDA) for the draws of the run's ``batch``-th
    training batch on ``rank``."""
    torch.manual_seed(mix(run_seed(), batch, rank))
