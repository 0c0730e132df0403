"""An evaluation run in one process and split over two gloo ranks, for the DDP tests:
each rank evaluates its ``EvalShardSampler`` share; rank 0's metrics come back."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from vlp.datamodules.datamodule import EvalShardSampler

#: (rank, world size) -> that rank's metrics; module-level, so spawned ranks can run it
Evaluate = Callable[[int, int], dict[str, float]]


def evaluate_share(
    model: Any, samples: Dataset, collate: Callable, rank: int, world_size: int
) -> dict[str, float]:
    """``model``'s metrics over its rank's share of ``samples``, in batches of 2."""
    sampler = EvalShardSampler(samples, world_size, rank, shuffle=False)
    for batch in DataLoader(samples, batch_size=2, sampler=sampler, collate_fn=collate):
        model.evaluator.add(batch)
    return model.evaluator.compute(None, None)


def one_and_two_ranks(evaluate: Evaluate, tmp_path: Path) -> tuple[dict, dict]:
    """The metrics of one process and of two ranks (loaded weights-only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _on_rank(0, 1, port, evaluate, str(tmp_path / "one.pt"))
    mp.spawn(_on_rank, args=(2, port, evaluate, str(tmp_path / "two.pt")), nprocs=2)
    return tuple(torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))


def _on_rank(rank: int, world_size: int, port: int, evaluate: Evaluate, out: str) -> None:
    if world_size > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    metrics = evaluate(rank, world_size)
    if rank == 0:
        torch.save(metrics, out)
    if world_size > 1:
        dist.destroy_process_group()
