"""The map-style dataset every indexed format (manifests, COCO, HF) shares."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from vlp.datamodules.formats.decode import MAX_PIXELS
from vlp.datamodules.formats.sample import RawSample, check_on_error, materialise
from vlp.datamodules.records import BadSampleError, ImageTextRecord, SkippedRecord


class RecordSource(Dataset):
    """Items are whole images with all their captions, decoded on access.

    ``samples`` is parsed up front (it is cheap and catches schema errors at
    construction); pixels are decoded lazily in ``__getitem__``. An entry whose
    index row was already unreadable is a ``BadSampleError`` and is skipped or
    raised on access like any other bad sample.
    """

    def __init__(
        self,
        samples: Sequence[RawSample | BadSampleError],
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.on_error = check_on_error(on_error)
        self.max_pixels = max_pixels
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ImageTextRecord | SkippedRecord:
        return materialise(self.samples[index], self.on_error, self.max_pixels)
