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
from torch.utils.data import DataLoader

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

    def __iter__(self) -> Iterator[Any]:
        self.dropped_batches = 0
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch())
        batches = super().__iter__()
        while True:
            batch = next(batches, None)
            if any_rank(batch is None, self.device):
                break
            yield batch
        if batch is not None:
            self.dropped_batches += 1 + sum(1 for _ in batches)
