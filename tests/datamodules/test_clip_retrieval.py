"""Clips batched for retrieval: ids stable per medium key, bad clips counted, shapes checked."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from vlp.datamodules.clip_retrieval import ClipRetrievalCollate, ClipSample, clip_id
from vlp.datamodules.media_text import MediaTextSamples
from vlp.datamodules.records import SkippedRecord
from vlp.datamodules.samples import NoItem
from vlp.datamodules.synthetic.media_text import SyntheticClips


def tokenize(captions: list[str]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in captions])
    return {"text_ids": lengths[:, None], "text_mask": torch.ones(len(captions), 1)}


def test_ids_are_stable_non_negative_and_differ_between_keys() -> None:
    assert clip_id("clips.jsonl:3") == 3559769219382157136  # blake2b: the same in every process
    assert clip_id("clips.jsonl:3") != clip_id("clips.jsonl:4")
    assert all(0 <= clip_id(f"k{i}") < 2**63 for i in range(100))


def test_a_batch_keeps_its_clips_and_counts_the_skipped() -> None:
    collate = ClipRetrievalCollate(tokenize)
    a, b = ClipSample(torch.zeros(2, 3, 4, 4), "ab", 5), ClipSample(torch.ones(2, 3, 4, 4), "c", 9)
    batch = collate([a, SkippedRecord("corrupt", "x"), b])
    assert batch["clips"].shape == (2, 2, 3, 4, 4)
    assert batch["clip_ids"].tolist() == batch["text_clip_ids"].tolist() == [5, 9]
    assert batch["text_ids"][:, 0].tolist() == [2, 1]
    assert batch["skipped"] == Counter(corrupt=1)
    empty = collate([SkippedRecord("missing", "y"), NoItem()])
    assert "clips" not in empty and len(empty["images"]) == 0
    assert empty["skipped"] == Counter(missing=1)
    with pytest.raises(ValueError, match="differ in frames"):
        collate([a, ClipSample(torch.zeros(3, 3, 4, 4), "d", 1)])


def test_an_evaluation_rank_without_a_clip_gets_an_empty_batch() -> None:
    """``EvalShardSampler`` gives a rank of a split smaller than the world one ``None``."""
    samples = MediaTextSamples(SyntheticClips("val", 1, num_frames=2, image_size=16), str)
    assert isinstance(samples[None], NoItem)
    batch = ClipRetrievalCollate(tokenize)([samples[None]])
    assert len(batch["images"]) == 0 and not batch["skipped"]
