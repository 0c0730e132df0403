"""The data module yields the same batches from every on-disk format, counts bad
samples, and shards evaluation data across ranks without repeats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_TEXT
from vlp.datamodules.collate import Collate
from vlp.datamodules.datamodule import EvalShardSampler, VLPDataModule
from vlp.datamodules.formats.writers import FORMATS, open_written, write_records
from vlp.datamodules.records import SkippedRecord
from vlp.datamodules.samples import Sample
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder


@pytest.fixture(scope="module")
def tokenize():
    return TextEncoder(config=TINY_TEXT, max_length=24).tokenize


def eval_batches(source, tokenize) -> list[dict]:
    data = VLPDataModule(test=source, batch_size=4, num_workers=0, image_size=32, tokenize=tokenize)
    return list(data.test_dataloader())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_yields_the_batches_of_the_in_memory_scenes(
    fmt: str, tmp_path: Path, tokenize
) -> None:
    scenes = SyntheticScenes("val", num_images=6, image_size=32, captions_per_image=3)
    path = write_records((scenes[i] for i in range(len(scenes))), tmp_path, fmt, shard_size=4)
    expected = eval_batches(scenes, tokenize)
    got = eval_batches(open_written(path, fmt), tokenize)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        for field in ("images", "image_ids", "labels", "text_ids", "text_mask", "text_image_ids"):
            assert torch.equal(ours[field], theirs[field]), field


def test_collate_counts_skipped_records_and_dropped_captions(tokenize) -> None:
    sample = Sample(torch.zeros(3, 4, 4), ["a red circle"], 5, 1, Counter({"empty_caption": 2}))
    batch = Collate(tokenize)(
        [sample, SkippedRecord("corrupt", "a.png"), SkippedRecord("corrupt", "b.png")]
    )
    assert batch["images"].shape == (1, 3, 4, 4)
    assert batch["skipped"] == Counter({"corrupt": 2, "empty_caption": 2})


def test_evaluation_keeps_every_caption_linked_to_its_image(tokenize) -> None:
    scenes = SyntheticScenes("test", num_images=3, image_size=32, captions_per_image=4)
    (batch,) = eval_batches(scenes, tokenize)
    assert batch["text_ids"].shape[0] == 12
    assert batch["text_image_ids"].tolist() == [
        i for i in batch["image_ids"].tolist() for _ in range(4)
    ]


def test_training_draws_one_caption_per_image(tokenize) -> None:
    scenes = SyntheticScenes("train", num_images=8, image_size=32, captions_per_image=5)
    data = VLPDataModule(
        train=scenes, batch_size=4, num_workers=0, image_size=32, tokenize=tokenize
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["text_ids"].shape[0] == batch["images"].shape[0] == 4


@pytest.mark.parametrize(("size", "world"), [(10, 2), (7, 3), (2, 4)])
def test_eval_sampler_covers_each_item_exactly_once(size: int, world: int) -> None:
    items = [i for rank in range(world) for i in EvalShardSampler(range(size), world, rank)]
    assert sorted(items) == list(range(size))


def test_classes_file_feeds_zero_shot(tmp_path: Path, tokenize) -> None:
    classes = {"class_names": ["circle", "star"], "prompt_templates": ["a {}"]}
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    data = VLPDataModule(classes_file=str(tmp_path / "classes.json"), tokenize=tokenize)
    assert data.class_names == ["circle", "star"] and data.prompt_templates == ["a {}"]
    in_memory = VLPDataModule(val=SyntheticScenes("val", 2), tokenize=tokenize)
    assert in_memory.class_names == list(SyntheticScenes("val", 2).class_names)


def test_objective_needs_are_checked_at_start_up(tokenize) -> None:
    data = VLPDataModule(tokenize=tokenize)
    data.check_needs(frozenset({"images", "text"}))
    with pytest.raises(ValueError, match="second_view"):
        data.check_needs(frozenset({"images", "second_view"}))
