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

Each DataLoader worker batches its own share of the stream, so each share ends in a
batch shorter than ``batch_size`` (unless it divides evenly). Training batches are all
one size (equal contrastive batches every step), so that short batch is dropped too,
and its samples counted: by the number of items the collate received, since a batch
is also short when the collate left out bad samples. Bad samples of every dropped
batch still reach ``skipped``: they are added to the next batch trained on (to the
last one, for the batches dropped at the end of a pass).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, default_collate

from vlp.datamodules.formats.split import WorkerStart
from vlp.distributed import any_rank


@dataclass(frozen=True)
class CountingCollate:
    """A collate that also says how many items it received: ``(received, batch)``."""

    collate: Callable[[list[Any]], Any]

    def __call__(self, items: list[Any]) -> tuple[int, Any]:
        return len(items), self.collate(items)


class LockstepLoader(DataLoader):
    """A ``DataLoader`` over a streaming dataset whose epochs end together on every rank.

    Args (besides the ``DataLoader``'s, less ``drop_last``: short batches are dropped here,
    and counted):
        device: where the agreement's flag lives (the process's device, CUDA under NCCL).
        epoch: the current training epoch, handed to the dataset's ``set_epoch`` (if
            it has one) before each pass, so the shard order changes per epoch.

    Counts of the current epoch, summed over its passes (a mixture restarts a shorter
    stream within an epoch): ``dropped_batches``, the batches this rank had but dropped
    because another rank ran out, and ``dropped_tail_samples``, the samples of the short
    batches that ended the workers' shares.
    """

    def __init__(
        self,
        *args: Any,
        device: torch.device,
        epoch: Callable[[], int],
        collate_fn: Callable[[list[Any]], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        counting = CountingCollate(collate_fn or default_collate)
        super().__init__(*args, collate_fn=counting, drop_last=False, **kwargs)
        self.device = device
        self.epoch = epoch
        self.dropped_batches = 0
        self.dropped_tail_samples = 0
        self._counted_epoch: int | None = None
        self._unreported = Counter()  # bad samples of dropped batches, not yet in a batch
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
        epoch, steps = self._resume or (self.epoch(), 0)
        self._resume = None
        if epoch != self._counted_epoch:
            self._counted_epoch = epoch
            self.dropped_batches = self.dropped_tail_samples = 0
            self._unreported = Counter()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        resuming = steps > 0 and self._start_part_way(steps)
        batches = self._full_batches(super().__iter__())
        batch = next(batches, None)
        if resuming:  # every worker's copy (or the in-process iterator) has read it by now
            self.dataset.start_next_pass(())
        trained = 0
        ends = any_rank(batch is None, self.device)
        if ends:
            self._drop(batch, batches)
        while not ends:
            following = next(batches, None)
            ends = any_rank(following is None, self.device)
            if ends:  # this batch is the pass's last: what is dropped after it is counted first
                self._drop(following, batches)
            yield self._report_unreported(batch)
            trained += 1
            batch = following
        if trained == 0 and steps == 0:
            raise ValueError(
                f"data.train: a pass over the stream in epoch {epoch} gave no full batch of "
                f"{self.batch_size} on some rank (on this one {self.dropped_tail_samples} "
                f"samples ended workers' shares in shorter batches, {self.dropped_batches} "
                "batches were dropped); use more data, fewer data.num_workers or a smaller "
                "data.batch_size"
            )

    def _full_batches(self, loaded: Iterator[tuple[int, Any]]) -> Iterator[Any]:
        """The batches of ``batch_size`` items: a shorter one ends a worker's share of the
        stream, and is dropped and counted."""
        for received, batch in loaded:
            if received == self.batch_size:
                yield batch
            else:
                self.dropped_tail_samples += received
                self._unreported += _skipped(batch)

    def _drop(self, batch: Any | None, rest: Iterator[Any]) -> None:
        """Read ``batch`` (if any) and the rest of the pass, which no step trains on, counting
        them."""
        for dropped in rest if batch is None else chain([batch], rest):
            self.dropped_batches += 1
            self._unreported += _skipped(dropped)

    def _report_unreported(self, batch: Any) -> Any:
        """``batch`` with the bad samples of the batches dropped before it in its ``skipped``."""
        if not self._unreported or not isinstance(batch, dict) or "skipped" not in batch:
            return batch
        batch = {**batch, "skipped": batch["skipped"] + self._unreported}
        self._unreported = Counter()
        return batch


def _skipped(batch: Any) -> Counter:
    """The bad samples a batch counted, if it is one of our collates' dicts."""
    return batch.get("skipped", Counter()) if isinstance(batch, dict) else Counter()
