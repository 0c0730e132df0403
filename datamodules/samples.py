"""From records to model-ready samples, for map-style and streaming sources."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from vlp.datamodules.records import ImageTextRecord, SkippedRecord


@dataclass
class Sample:
    """One transformed image with the captions a batch will carry for it."""

    image: Tensor
    captions: list[str]
    image_id: int
    label: int
    dropped_captions: Counter


def to_sample(
    record: ImageTextRecord | SkippedRecord,
    transform: Callable,
    all_captions: bool,
) -> Sample | SkippedRecord:
    """Training draws one caption per image per visit (ALBEF); evaluation keeps them all."""
    if isinstance(record, SkippedRecord):
        return record
    captions = list(record.captions)
    if not all_captions:
        captions = [captions[int(torch.randint(len(captions), ()))]]
    return Sample(
        image=transform(record.image),
        captions=captions,
        image_id=record.image_id,
        label=record.label,
        dropped_captions=Counter(record.meta.get("dropped_captions", {})),
    )


class MappedSamples(Dataset):
    """A map-style source seen through :func:`to_sample`."""

    def __init__(self, source: Dataset, transform: Callable, all_captions: bool) -> None:
        self.source = source
        self.transform = transform
        self.all_captions = all_captions

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample | SkippedRecord:
        return to_sample(self.source[index], self.transform, self.all_captions)


class StreamedSamples(IterableDataset):
    """A streaming source (it splits itself by rank and worker) seen through :func:`to_sample`."""

    def __init__(self, source: IterableDataset, transform: Callable, all_captions: bool) -> None:
        self.source = source
        self.transform = transform
        self.all_captions = all_captions

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __iter__(self) -> Iterator[Sample | SkippedRecord]:
        for record in self.source:
            yield to_sample(record, self.transform, self.all_captions)


def as_samples(source: Dataset, transform: Callable, all_captions: bool) -> Dataset:
    wrapper = MappedSamples if not isinstance(source, IterableDataset) else StreamedSamples
    return wrapper(source, transform, all_captions)
