"""Media-and-text data for a language model: interleaved documents and captioned clips.

Image–text pairs keep their own path (``records``/``samples``/``collate``) and reach the
LM through :meth:`LMTokenize.captions`; everything with several media per row, or
several frames per medium, comes through here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from vlp.datamodules.lm_text import LMTokenize
from vlp.datamodules.records import SkippedRecord
from vlp.datamodules.samples import NoItem, StreamView

Medium = tuple[Image.Image, ...]  # one image, or the frames of a clip in order


@dataclass(frozen=True)
class MediaTextRecord:
    """Text and media in reading order, e.g. ``(image, "a red circle", image, "then, ...")``.

    ``interleaved`` documents get MMC4's label masking (no loss on text before the first
    medium or between an ``<|endofchunk|>`` and the next medium); a single captioned
    image or clip gets the pairs' (every caption token and EOS is a target).
    """

    segments: tuple[str | Medium, ...]
    interleaved: bool
    key: str = ""
    #: records sharing it describe one medium (a clip's several captions); evaluation
    #: retrieves that medium once. Empty: the record's own ``key``.
    medium_key: str = ""


def clip_of(record: MediaTextRecord) -> tuple[Medium, str]:
    """A one-clip record's frames and caption; a record of anything else is refused."""
    segments = record.segments
    if record.interleaved or len(segments) != 2 or not isinstance(segments[1], str):
        raise ValueError(
            f"{record.key}: not a clip (one medium and its caption); documents train only "
            "language-model objectives"
        )
    return segments[0], segments[1]


class MediaTextSource(Dataset):
    """Base of the sources that yield :class:`MediaTextRecord` (the data module routes on it)."""


class ClipSource(MediaTextSource):
    """A source of captioned clips, one medium and its caption per record: what evaluation
    draws few-shot demonstrations of clips from (documents are no demonstrations)."""


@dataclass
class MediaTextSample:
    """A record with its media transformed: ``media[k]`` is [F, C, H, W] for the k-th medium."""

    layout: list[str | None]
    media: list[Tensor]
    interleaved: bool


def to_media_sample(
    record: MediaTextRecord | SkippedRecord, transform: Callable
) -> MediaTextSample | SkippedRecord:
    """Every frame goes through the same deterministic ``transform`` (random crops would
    move a clip's object between frames)."""
    if isinstance(record, SkippedRecord):
        return record
    layout: list[str | None] = []
    media: list[Tensor] = []
    for segment in record.segments:
        if isinstance(segment, str):
            layout.append(segment)
        else:
            layout.append(None)
            media.append(torch.stack([transform(frame) for frame in segment]))
    return MediaTextSample(layout, media, record.interleaved)


class MediaTextSamples(Dataset):
    """A map-style :class:`MediaTextSource` with each record ``convert``-ed
    (:func:`to_media_sample` for training, :func:`to_clip_sample` for evaluation)."""

    def __init__(self, source: Dataset, convert: Callable) -> None:
        self.source = source
        self.convert = convert

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int | None) -> Any:
        if index is None:  # an evaluation rank without an item (``EvalShardSampler``)
            return NoItem()
        return self.convert(self.source[index])


class StreamedMediaTextSamples(StreamView):
    """A streaming :class:`MediaTextSource` with each record ``convert``-ed."""

    def __init__(self, source: IterableDataset, convert: Callable) -> None:
        super().__init__(source)
        self.convert = convert

    def __iter__(self) -> Iterator[Any]:
        for record in self.source:
            yield self.convert(record)


def as_media_samples(source: Dataset, convert: Callable) -> Dataset:
    streaming = isinstance(source, IterableDataset)
    return (StreamedMediaTextSamples if streaming else MediaTextSamples)(source, convert)


@dataclass(frozen=True)
class MediaTextCollate:
    """Batch fields: ``media`` [B, T, F, C, H, W] (rows with fewer media are zero-padded;
    the padding is never attended, as no ``<image>`` token names it), ``media_counts``
    [B], ``lm_ids``/``lm_mask``/``lm_labels`` [B, L] and ``skipped``.

    A batch whose every document or clip was bad has no rows (:func:`empty_media_batch`);
    the module skips its step on every rank, as it does an empty image–text batch.
    """

    lm_tokenize: LMTokenize

    def __call__(self, items: list[MediaTextSample | SkippedRecord]) -> dict[str, Any]:
        skipped = Counter(item.reason for item in items if isinstance(item, SkippedRecord))
        samples = [item for item in items if not isinstance(item, SkippedRecord)]
        if not samples:
            return empty_media_batch(skipped)
        frame_shapes = {medium.shape for s in samples for medium in s.media}
        if len(frame_shapes) > 1:
            raise ValueError(
                f"media of one batch differ in frames or size {sorted(frame_shapes)}: "
                "give images and clips their own datasets in a mixture"
            )
        counts = [len(s.media) for s in samples]
        (shape,) = frame_shapes or {(1, 0, 0, 0)}
        media = torch.zeros(len(samples), max(counts), *shape)
        for row, sample in enumerate(samples):
            for k, medium in enumerate(sample.media):
                media[row, k] = medium
        if len({s.interleaved for s in samples}) > 1:
            raise ValueError("a batch mixes documents and captioned media; use a mixture")
        return {
            "media": media,
            "media_counts": torch.tensor(counts, dtype=torch.long),
            **self.lm_tokenize([s.layout for s in samples], samples[0].interleaved),
            "skipped": skipped,
        }


def empty_media_batch(skipped: Counter) -> dict[str, Any]:
    """A batch without rows that still reports what was skipped.

    Tokenizers refuse an empty list, and no objective reads it: the module sees zero
    rows in ``media`` and skips the step on every rank.
    """
    no_text = torch.zeros(0, 0, dtype=torch.long)
    return {
        "media": torch.empty(0),
        "media_counts": torch.zeros(0, dtype=torch.long),
        "lm_ids": no_text,
        "lm_mask": no_text,
        "lm_labels": no_text,
        "skipped": skipped,
    }
