"""``global_mean``: per-rank sums over the global count, so DDP's gradient average is exact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlp.distributed import global_mean

# rank r holds these per-position losses; the global mean is over all five
LOSSES = [[1.0, 2.0, 3.0, 4.0], [10.0]]


def test_one_process_is_the_plain_mean_and_zero_count_is_zero() -> None:
    assert global_mean(torch.tensor(9.0), 3).item() == pytest.approx(3.0)
    empty = torch.zeros((), requires_grad=True)
    loss = global_mean(empty * 2, torch.tensor(0))
    loss.backward()
    assert loss.item() == 0.0 and empty.grad is not None


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    weight = torch.ones((), requires_grad=True)
    losses = torch.tensor(LOSSES[rank]) * weight
    loss = global_mean(losses.sum(), len(LOSSES[rank]))
    loss.backward()
    dist.all_reduce(weight.grad)
    weight.grad /= 2  # what DDP does to gradients
    if rank == 0:
        torch.save(weight.grad, out)
    dist.destroy_process_group()


@pytest.mark.ddp
def test_two_ranks_average_to_the_global_batch_mean(tmp_path: Path) -> None:
    out = tmp_path / "grad.pt"
    port = 29500 + os.getpid() % 1000
    mp.spawn(_rank, args=(port, str(out)), nprocs=2, join=True)
    everything = [x for rank in LOSSES for x in rank]
    # d/dw of mean(w · losses) over all five positions = mean(losses) = 4
    assert torch.load(out, weights_only=True).item() == pytest.approx(
        sum(everything) / len(everything)
    )
