"""Training throughput as a logged metric, so sweeps can compare the cost of objectives."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from vlp.datamodules.mixture import step_rows

METRIC = "train/samples_per_s"


class Throughput(Callback):
    """Logs ``train/samples_per_s`` once per epoch: samples over all ranks per second of wall time
    (a data mixture's step counts the rows of every dataset's batch).

    The clock runs from the end of the epoch's first batch to the end of its last, so data
    worker start-up and the end-of-epoch validation are left out; validation in the middle of
    an epoch (``val_check_interval``) is subtracted.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._end = 0.0
        self._validating_since = 0.0
        self._validation = 0.0  # seconds of validation since the last training batch
        self._paused = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start, self._validation, self._paused, self._samples = None, 0.0, 0.0, 0

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
    ) -> None:
        self._end = time.perf_counter()
        if self._start is None:
            self._start = self._end
        else:
            self._samples += step_rows(batch) * trainer.world_size
            self._paused += self._validation
        self._validation = 0.0

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validating_since = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validation += time.perf_counter() - self._validating_since

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        elapsed = 0.0 if self._start is None else self._end - self._start - self._paused
        if self._samples and elapsed > 0:
            pl_module.log(METRIC, self._samples / elapsed, rank_zero_only=True)
