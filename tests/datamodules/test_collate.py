"""Masks drawn while batching: per-sample, the same whichever rank a sample lands on, seeded."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.tiny import TINY_TEXT
from vlp.datamodules.collate import BatchMasks, Collate
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.samples import Sample
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder
from vlp.masking import BlockMasking, SpanMasking
from vlp.seeding import mix

CAPTIONS = ["a small red circle left of a blue square", "a star", "two green triangles"]


@pytest.fixture(scope="module")
def tokenize():
    return TextEncoder(config=TINY_TEXT, max_length=16).tokenize


@pytest.fixture(scope="module")
def recipes(tokenize):
    tokenizer = tokenize.tokenizer
    span = SpanMasking(
        tuple(tokenizer.all_special_ids), tokenizer.mask_token_id, len(tokenizer), 0.5, 2
    )
    return (BlockMasking((4, 4), 0.5, min_block=2), span)


def samples(ids: range, visit: int = 0) -> list[Sample]:
    """Only image 0 has the long caption, so batches without it are padded shorter; each
    sample's key is its id and ``visit`` (the data seed, epoch and pass in training)."""
    captions = [CAPTIONS[0] if i == 0 else CAPTIONS[1 + i % 2] for i in ids]
    return [
        Sample(torch.zeros(3, 8, 8), [c], i, i % 3, Counter(), key=mix(visit, i))
        for i, c in zip(ids, captions, strict=True)
    ]


def test_a_sample_gets_the_same_masks_in_either_ranks_share_of_the_batch(tokenize, recipes) -> None:
    whole = Collate(tokenize, BatchMasks(recipes))(samples(range(8)))
    halves = [Collate(tokenize, BatchMasks(recipes))(samples(r)) for r in (range(4), range(4, 8))]
    assert torch.equal(whole["image_mask"], torch.cat([h["image_mask"] for h in halves]))
    for half, rows in zip(halves, (slice(0, 4), slice(4, 8)), strict=True):
        length = half["text_ids"].shape[1]
        assert torch.equal(whole["text_mask_positions"][rows, :length], half["text_mask_positions"])
        assert torch.equal(whole["masked_text_ids"][rows, :length], half["masked_text_ids"])
    assert whole["image_mask"].shape == (8, 16) and whole["image_mask"].any()
    assert halves[1]["text_ids"].shape[1] < whole["text_ids"].shape[1]


def test_text_masks_follow_the_recipe(tokenize, recipes) -> None:
    batch = Collate(tokenize, BatchMasks(recipes))(samples(range(16)))
    selected, masked = batch["text_mask_positions"], batch["masked_text_ids"]
    mask_id = recipes[1].mask_id
    assert selected.any()
    assert (masked[selected] == mask_id).all()  # mask_fraction 1: every selected token is [MASK]
    assert torch.equal(masked[~selected], batch["text_ids"][~selected])
    assert not selected[batch["text_mask"] == 0].any()
    assert not selected[:, 0].any()  # [CLS]


def test_masks_follow_the_samples_keys_only(tokenize, recipes) -> None:
    collate = Collate(tokenize, BatchMasks(recipes))
    first = collate(samples(range(8), visit=1))
    again = Collate(tokenize, BatchMasks(recipes))(samples(range(8), visit=1))
    reversed_order = collate(samples(range(8), visit=1)[::-1])
    next_visit = collate(samples(range(8), visit=2))
    for field in ("image_mask", "text_mask_positions"):
        assert torch.equal(first[field], again[field])
        assert torch.equal(first[field][:1], reversed_order[field][-1:, : first[field].shape[1]])
        assert not torch.equal(first[field], next_visit[field])


def test_one_field_made_two_ways_is_refused(recipes) -> None:
    with pytest.raises(ValueError, match="two ways"):
        BatchMasks((recipes[0], BlockMasking((4, 4), 0.25, min_block=2)))


def test_training_batches_carry_masks_only_when_objectives_list_recipes(tokenize, recipes) -> None:
    def data(needs, workers: int = 0) -> VLPDataModule:
        scenes = SyntheticScenes("train", num_images=16, image_size=32)
        return VLPDataModule(
            train=scenes, val=scenes, batch_size=4, num_workers=workers, image_size=32,
            tokenize=tokenize, needs=frozenset(needs),
        )  # fmt: skip

    plain = next(iter(data({"images", "text"}).train_dataloader()))
    assert "image_mask" not in plain
    masked = data({"images", "text", *recipes})
    masked.check_needs(masked.needs)
    assert {"image_mask", "masked_text_ids"} <= set(next(iter(masked.train_dataloader())))
    assert "image_mask" not in next(iter(masked.val_dataloader()))
    with pytest.raises(ValueError, match="image_mask"):
        masked.check_needs(frozenset({"images", "image_mask"}))  # a field without its recipe

    def training_batches(workers: int) -> list[dict]:
        return list(data({"images", "text", *recipes}, workers).train_dataloader())

    # every draw (crop, colours, caption, masks) follows from the sample's visit, not from
    # the process that drew it: data workers give the batches made in-process
    for in_process, in_workers in zip(training_batches(0), training_batches(2), strict=True):
        for field in ("images", "text_ids", "image_mask", "masked_text_ids"):
            assert torch.equal(in_process[field], in_workers[field]), field
