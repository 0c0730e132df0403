"""The throughput callback against a hand-driven clock."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from vlp import throughput
from vlp.throughput import METRIC, Throughput


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Module:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float, **kwargs) -> None:
        self.logged[name] = value


def test_samples_per_second_leave_out_the_first_batch_and_validation(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    trainer, module, callback = SimpleNamespace(world_size=2), Module(), Throughput()
    batch = {"images": torch.zeros(4, 3, 8, 8)}

    def batch_ends_at(t: float) -> None:
        clock.now = t
        callback.on_train_batch_end(trainer, module, None, batch, 0)

    callback.on_train_epoch_start(trainer, module)
    batch_ends_at(10.0)  # first batch: start of the clock (worker start-up left out)
    batch_ends_at(11.0)
    clock.now = 11.5
    callback.on_validation_start(trainer, module)  # mid-epoch validation: 3 s, subtracted
    clock.now = 14.5
    callback.on_validation_end(trainer, module)
    batch_ends_at(15.0)
    batch_ends_at(16.0)
    clock.now = 20.0  # end-of-epoch validation comes after the last batch
    callback.on_validation_start(trainer, module)
    clock.now = 30.0
    callback.on_validation_end(trainer, module)
    callback.on_train_epoch_end(trainer, module)
    # 3 timed batches × 4 samples × 2 ranks over (16 − 10 − 3) s
    assert module.logged[METRIC] == 3 * 4 * 2 / 3.0


def test_a_mixture_step_counts_the_rows_of_every_dataset(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    trainer, module, callback = SimpleNamespace(world_size=1), Module(), Throughput()
    batch = {
        "pairs": {"images": torch.zeros(4, 3, 8, 8), "dataset": "pairs"},
        "docs": {"media": torch.zeros(2, 3, 1, 3, 8, 8), "dataset": "docs"},
    }
    callback.on_train_epoch_start(trainer, module)
    for t in (1.0, 2.0, 3.0):
        clock.now = t
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    callback.on_train_epoch_end(trainer, module)
    assert module.logged[METRIC] == 2 * (4 + 2) / 2.0
