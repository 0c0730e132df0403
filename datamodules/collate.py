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

    When samples carry hard-negative captions (evaluation on the synthetic
    scenes) there are also ``negative_ids``/``negative_mask [N,L']`` and
    ``negative_text_index [N]``, the row of the true caption in ``text_ids``
    that each negative was made from.
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
            **self._negatives(samples),
            "images": torch.stack([s.image for s in samples]) if samples else torch.empty(0),
            **{
                name: torch.stack([s.extra_views[name] for s in samples])
                for name in (samples[0].extra_views if samples else {})
            },
            "image_ids": torch.tensor([s.image_id for s in samples], dtype=torch.long),
            "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
            "text_image_ids": torch.tensor(
                [s.image_id for s in samples for _ in s.captions], dtype=torch.long
            ),
            **self.tokenize(captions),
            "skipped": skipped,
        }

    def _negatives(self, samples: list[Sample]) -> dict[str, Tensor]:
        texts: list[str] = []
        true_rows: list[int] = []
        row = 0
        for sample in samples:
            for c in range(len(sample.captions)):
                per_caption = sample.hard_negatives[c] if c < len(sample.hard_negatives) else []
                texts.extend(per_caption)
                true_rows.extend([row] * len(per_caption))
                row += 1
        if not texts:
            return {}
        tokens = self.tokenize(texts)
        return {
            "negative_ids": tokens["text_ids"],
            "negative_mask": tokens["text_mask"],
            "negative_text_index": torch.tensor(true_rows, dtype=torch.long),
        }
