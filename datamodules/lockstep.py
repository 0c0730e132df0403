"""Streaming training batches that end on every rank at the same step.

A stream is split across ranks by whole shards (``formats/split.py``), and shards
differ in size and in how many bad samples they hold, so ranks reach the end of an
epoch after different numbers of batches. A rank that ran out would leave the
others waiting forever in the next gradient all-reduce. Here, before each batch,
the ranks agree (one all-reduce of a flag) whether every one of them has a batch;
the epoch ends for all at the first batch some rank lacks.

Why not the alternatives: a declared epoch length (WebDataset's ``with_epoch``,
open_clip's ``train_num_samples``) needs the dataset's size up front and still
hangs when a rank's share falls short of it; resampling shards with replacement
changes what an epoch is. Ending at the shortest rank drops the batches the
longer ranks still held: they are read to the end of the epoch and counted, and
the shard order changes every epoch (with ``shuffle_shards``) so that it is not
the same data that is dropped each time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from vlp.datamodules.formats.split import WorkerStart
from vlp.distributed import any_rank


class LockstepLoader(DataLoader):
    """A ``DataLoader`` over a streaming dataset whose epochs end together on every rank.

    Args (besides the ``DataLoader``'s):
        device: where the agreement's flag lives (the process's device, CUDA under NCCL).
        epoch: the current training epoch, handed to the dataset's ``set_epoch`` (if
            it has one) before each pass, so the shard order changes per epoch.
    """

    def __init__(
        self,
        *args: Any,
        device: torch.device,
        epoch: Callable[[], int],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.device = device
        self.epoch = epoch
        #: batches this rank had but dropped because another rank ran out, this epoch
        self.dropped_batches = 0
        self._resume: tuple[int, int] | None = None

    def resume_after(self, epoch: int, steps: int) -> None:
        """Make the next pass the rest of ``epoch``, after the ``steps`` batches this rank
        trained on in it before a checkpoint.

        The epoch is given, not read from the trainer: a resumed run's fit loop makes
        its first iterator (and fetches a batch ahead) before it restores its epoch.
        Batch ``i`` of a pass comes from worker ``i mod W`` (each of the ``W`` workers
        batches its own share of the stream), so worker ``w`` of the resumed pass reads
        as worker ``(w + steps) mod W``, whose batch comes next, and skips the batches
        that worker had made. That is exact unless a worker's share ran out before the
        checkpoint, which only happens in an epoch's last batches.
        """
        self._resume = (epoch, steps)

    def _start_part_way(self, steps: int) -> bool:
        """Tell the dataset where each worker starts this pass, ``steps`` batches in."""
        if not getattr(self.dataset, "can_start_part_way", False):
            rank_zero_warn(
                f"{type(self.dataset).__name__} cannot start part-way: the resumed epoch "
                f"reads again the {steps} batches this rank trained on before the checkpoint"
            )
            return False
        workers = max(self.num_workers, 1)
        made = [steps // workers + (w < steps % workers) for w in range(workers)]
        reads_as = [(w + steps) % workers for w in range(workers)]
        self.dataset.start_next_pass(
            tuple(WorkerStart(r, made[r] * self.batch_size) for r in reads_as)
        )
        return True

    def __iter__(self) -> Iterator[Any]:
        self.dropped_batches = 0
        epoch, steps = self._resume or (self.epoch(), 0)
        self._resume = None
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        resuming = steps > 0 and self._start_part_way(steps)
        batches = super().__iter__()
        while True:
            batch = next(batches, None)
            if resuming:  # every worker's copy (or the in-process iterator) has read it by now
                self.dataset.start_next_pass(())
                resuming = False
            if any_rank(batch is None, self.device):
                break
            yield batch
        if batch is not None:
            self.dropped_batches += 1 + sum(1 for _ in batches)
