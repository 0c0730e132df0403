"""Clips as evaluation data: each clip's frames and caption, batched for video–text
retrieval (``vlp.evaluation.video_retrieval``).

Training reads clips through the LM path (``media_text``); evaluation embeds them in the
contrastive space instead, so any clip source can test an image–text model zero-shot.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vlp.datamodules.collate import empty_batch
from vlp.datamodules.media_text import MediaTextRecord, clip_of
from vlp.datamodules.records import SkippedRecord


@dataclass
class ClipSample:
    frames: Tensor  # [F, C, H, W]
    caption: str
    clip_id: int  # the same for every record of one clip (its medium key)


def clip_id(key: str) -> int:
    """A stable non-negative 63-bit id of a medium key: the same on every rank and run."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def to_clip_sample(
    record: MediaTextRecord | SkippedRecord, transform: Callable
) -> ClipSample | SkippedRecord:
    """A one-clip record's frames through the deterministic evaluation ``transform``."""
    if isinstance(record, SkippedRecord):
        return record
    frames, caption = clip_of(record)
    pixels = torch.stack([transform(frame) for frame in frames])
    return ClipSample(pixels, caption, clip_id(record.medium_key or record.key))


@dataclass(frozen=True)
class ClipRetrievalCollate:
    """Batch fields: ``clips`` [B, F, C, H, W], ``clip_ids`` [B], ``text_ids``/``text_mask``
    [B, L] (each clip's caption), ``text_clip_ids`` [B], ``captions`` (each clip's caption
    in a list, for captioning metrics) and ``skipped``.

    A batch whose every clip was bad is :func:`~vlp.datamodules.collate.empty_batch`:
    evaluation only counts its skipped samples.
    """

    tokenize: Callable[[list[str]], dict[str, Tensor]]

    def __call__(self, items: list[ClipSample | SkippedRecord]) -> dict[str, Any]:
        skipped = Counter(item.reason for item in items if isinstance(item, SkippedRecord))
        samples = [item for item in items if isinstance(item, ClipSample)]
        if not samples:
            return empty_batch(skipped)
        shapes = {s.frames.shape for s in samples}
        if len(shapes) > 1:
            raise ValueError(f"clips of one batch differ in frames or size {sorted(shapes)}")
        ids = torch.tensor([s.clip_id for s in samples], dtype=torch.long)
        return {
            "clips": torch.stack([s.frames for s in samples]),
            "clip_ids": ids,
            "text_clip_ids": ids.clone(),
            **self.tokenize([s.caption for s in samples]),
            "captions": [[s.caption] for s in samples],  # as image batches: a list per row
            "skipped": skipped,
        }
