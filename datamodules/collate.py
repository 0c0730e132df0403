"""Batching: drop and count bad samples, tokenize captions, keep caption→image links, draw masks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vlp.datamodules.lm_text import LMTokenize
from vlp.datamodules.records import CAPTION_PREFIX, SkippedRecord
from vlp.datamodules.samples import NoItem, Sample
from vlp.masking import BlockMasking, SpanMasking
from vlp.seeding import generator

MaskRecipe = BlockMasking | SpanMasking
IMAGE_SALT, TEXT_SALT = 1, 2  # an image's and its caption's masks use unrelated generators


class BatchMasks:
    """Draws the masks objectives asked for, one generator per sample.

    A sample's generator is seeded from its random key (``Sample.key``: data seed,
    epoch, pass and index), so a sample gets the same mask in whichever rank's share
    of a global batch it lands (2 ranks × B see the masks of 1 rank × 2B), masks
    change from visit to visit, and a resumed run draws them again exactly.
    """

    def __init__(self, recipes: tuple[MaskRecipe, ...]) -> None:
        fields = [field for recipe in recipes for field in recipe.fields]
        if len(fields) != len(set(fields)):
            raise ValueError(f"objectives ask for one mask field made two ways: {recipes}")
        self.recipes = recipes

    def __call__(self, batch: dict[str, Any], samples: list[Sample]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for recipe in self.recipes:
            if isinstance(recipe, BlockMasking):
                rows = [recipe(generator(s.key, IMAGE_SALT)) for s in samples]
                out["image_mask"] = torch.stack(rows) if rows else torch.empty(0, dtype=torch.bool)
            else:
                out.update(_text_masks(recipe, batch, samples))
        return out


def _text_masks(
    recipe: SpanMasking, batch: dict[str, Any], samples: list[Sample]
) -> dict[str, Tensor]:
    """Each caption masked with its own generator, keyed by its sample and its rank there.

    Only the real tokens are drawn for, so the mask does not depend on how
    long the batch's longest caption is.
    """
    ids, attention = batch["text_ids"], batch["text_mask"]
    masked_ids, positions = ids.clone(), torch.zeros_like(attention, dtype=torch.bool)
    keys = [(s.key, c) for s in samples for c in range(len(s.captions))]
    for row, (key, caption) in enumerate(keys):
        real = attention[row].bool()
        masked = recipe(
            ids[row, real][None], attention[row, real][None], generator(key, TEXT_SALT, caption)
        )
        masked_ids[row, real] = masked.ids[0]
        positions[row, real] = masked.selected[0]
    return {"masked_text_ids": masked_ids, "text_mask_positions": positions}


@dataclass(frozen=True)
class Collate:
    """Build a batch dict from samples.

    Fields: ``images [B,3,H,W]``, ``image_ids [B]``, ``labels [B]``,
    ``text_ids``/``text_mask [T,L]``, ``text_image_ids [T]`` (T = B in
    training, all captions in evaluation) and ``skipped``, a Counter of bad
    samples by reason, and of bad captions dropped from kept samples by
    ``caption_<reason>``, that the module logs, so nothing is lost silently.

    When samples carry hard-negative captions (evaluation on the synthetic
    scenes) there are also ``negative_ids``/``negative_mask [N,L']`` and
    ``negative_text_index [N]``, the row of the true caption in ``text_ids``
    that each negative was made from.

    With ``masks`` (training, when objectives list mask recipes in their
    needs) there are also the fields of each recipe, e.g. ``image_mask [B,N]``
    or ``masked_text_ids``/``text_mask_positions [T,L]``.

    For generative evaluation (few-shot captioning and VQA) and prompt tuning there are
    also ``captions``, each image's caption strings, and ``questions``, each image's
    question/answer pairs, as lists of length B; and ``attributes``, each image's named
    linear-probe targets beside its label (``{"colour": 3, "count": 2}``).

    With ``lm_tokenize`` (training, for Flamingo) each caption is also its image's LM
    sequence ``<image>caption<|endofchunk|><eos>``: ``lm_ids``/``lm_mask``/``lm_labels [T,L'']``.

    A batch whose every sample was bad (or an evaluation rank's :class:`NoItem`) has
    no rows and only the basic fields (:func:`empty_batch`); the module skips it.
    """

    tokenize: Callable[[list[str]], dict[str, Tensor]]
    masks: BatchMasks | None = None
    lm_tokenize: LMTokenize | None = None

    def __call__(self, items: list[Sample | SkippedRecord | NoItem]) -> dict[str, Any]:
        skipped: Counter = Counter()
        samples: list[Sample] = []
        for item in items:
            if isinstance(item, SkippedRecord):
                skipped[item.reason] += 1
            elif isinstance(item, Sample):
                samples.append(item)
                skipped.update(
                    {CAPTION_PREFIX + reason: n for reason, n in item.dropped_captions.items()}
                )
        if not samples:
            return empty_batch(skipped)
        captions = [caption for s in samples for caption in s.captions]
        batch = {
            **self._negatives(samples),
            "images": torch.stack([s.image for s in samples]),
            **{
                name: torch.stack([s.extra_views[name] for s in samples])
                for name in samples[0].extra_views
            },
            "image_ids": torch.tensor([s.image_id for s in samples], dtype=torch.long),
            "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
            "text_image_ids": torch.tensor(
                [s.image_id for s in samples for _ in s.captions], dtype=torch.long
            ),
            **self.tokenize(captions),
            **(self.lm_tokenize.captions(captions) if self.lm_tokenize else {}),
            "captions": [s.captions for s in samples],
            "questions": [s.questions for s in samples],
            "attributes": [s.attributes for s in samples],
            "skipped": skipped,
        }
        return batch if self.masks is None else {**batch, **self.masks(batch, samples)}

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


def empty_batch(skipped: Counter) -> dict[str, Any]:
    """A batch without rows that still reports what was skipped.

    Tokenizers refuse an empty list, and the step never reads text from it: the
    module skips a training step on every rank when one rank's batch is empty,
    and evaluation only counts its skipped samples.
    """
    no_rows = torch.zeros(0, dtype=torch.long)
    no_text = torch.zeros(0, 0, dtype=torch.long)
    return {
        "images": torch.empty(0),
        "image_ids": no_rows,
        "labels": no_rows,
        "text_image_ids": no_rows,
        "text_ids": no_text,
        "text_mask": no_text,
        "captions": [],
        "questions": [],
        "attributes": [],
        "skipped": skipped,
    }
