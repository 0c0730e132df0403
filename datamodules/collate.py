"""Batching: drop and count bad samples, tokenize captions, keep caption→image links."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vlp.datamodules.records import SkippedRecord
from vlp.datamodules.samples import Sample


@dataclass(frozen=True)
class Collate:
    """Build a batch dict from samples.

    Fields: ``images [B,3,H,W]``, ``image_ids [B]``, ``labels [B]``,
    ``text_ids``/``text_mask [T,L]``, ``text_image_ids [T]`` (T = B in
    training, all captions in evaluation) and ``skipped``, a Counter of bad
    samples by reason that the module logs, so nothing is lost silently.
    """

    tokenize: Callable[[list[str]], dict[str, Tensor]]

    def __call__(self, items: list[Sample | SkippedRecord]) -> dict[str, Any]:
        skipped: Counter = Counter()
        samples: list[Sample] = []
        for item in items:
            if isinstance(item, SkippedRecord):
                skipped[item.reason] += 1
            else:
                samples.append(item)
                skipped.update(item.dropped_captions)
        captions = [caption for s in samples for caption in s.captions]
        return {
            "images": torch.stack([s.image for s in samples]) if samples else torch.empty(0),
            "image_ids": torch.tensor([s.image_id for s in samples], dtype=torch.long),
            "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
            "text_image_ids": torch.tensor(
                [s.image_id for s in samples for _ in s.captions], dtype=torch.long
            ),
            **self.tokenize(captions),
            "skipped": skipped,
        }
