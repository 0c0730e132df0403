"""The data module yields the same batches from every on-disk format, counts bad
samples, and shards evaluation data across ranks without repeats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_TEXT
from vlp.datamodules import lockstep
from vlp.datamodules.collate import Collate
from vlp.datamodules.datamodule import EvalShardSampler, VLPDataModule
from vlp.datamodules.formats.writers import FORMATS, open_written, write_records
from vlp.datamodules.records import SKIP_REASONS, SkippedRecord
from vlp.datamodules.samples import Sample, hard_negative_texts, probe_attributes
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


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "webdataset"])
def test_every_indexed_format_trains_on_the_augmented_batches_of_the_in_memory_scenes(
    fmt: str, tmp_path: Path, tokenize
) -> None:
    """A sample's random draws (crop, colours, caption) follow from its visit, not from
    where it was read: every file format gives the same shuffled, augmented batches."""
    scenes = SyntheticScenes("train", num_images=8, image_size=32, captions_per_image=2)
    path = write_records((scenes[i] for i in range(len(scenes))), tmp_path, fmt, shard_size=4)

    def training_batches(source) -> list[dict]:
        data = VLPDataModule(train=source, batch_size=4, num_workers=0, image_size=32,
                             tokenize=tokenize)  # fmt: skip
        return list(data.train_dataloader())

    expected, got = training_batches(scenes), training_batches(open_written(path, fmt))
    assert len(got) == len(expected) == 2
    for ours, theirs in zip(got, expected, strict=True):
        for field in ("images", "image_ids", "text_ids"):
            assert torch.equal(ours[field], theirs[field]), field


def test_collate_counts_skipped_records_and_dropped_captions(tokenize) -> None:
    sample = Sample(torch.zeros(3, 4, 4), ["a red circle"], 5, 1, Counter({"empty_caption": 2}))
    batch = Collate(tokenize)(
        [sample, SkippedRecord("corrupt", "a.png"), SkippedRecord("corrupt", "b.png")]
    )
    assert batch["images"].shape == (1, 3, 4, 4)
    # a dropped caption is no dropped image: the two are counted apart
    assert batch["skipped"] == Counter({"corrupt": 2, "caption_empty_caption": 2})
    assert set(batch["skipped"]) <= set(SKIP_REASONS)  # the reasons the module logs


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
    shares = [list(EvalShardSampler(range(size), world, rank)) for rank in range(world)]
    assert sorted(i for share in shares for i in share if i is not None) == list(range(size))
    # a rank without items still loads one (empty) batch, so it reaches the epoch-end gathers
    assert [s for s in shares if None in s] == [[None]] * max(world - size, 0)
    assert [len(EvalShardSampler(range(size), world, r)) for r in range(world)] == list(
        map(len, shares)
    )


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
    data.check_needs(frozenset({"images", "images_aug", "fusion"}))
    with pytest.raises(ValueError, match="block_mask"):
        data.check_needs(frozenset({"images", "block_mask"}))


def test_evaluation_batches_carry_each_captions_hard_negatives(tokenize) -> None:
    scenes = SyntheticScenes("val", num_images=3, image_size=32, captions_per_image=2)
    (batch,) = eval_batches(scenes, tokenize)
    texts, rows = [], []
    for index in range(len(scenes)):
        for c, negatives in enumerate(scenes[index].meta["hard_negatives"]):
            texts += [negative["text"] for negative in negatives]
            rows += [2 * index + c] * len(negatives)
    assert batch["negative_text_index"].tolist() == rows
    expected = tokenize(texts)
    assert torch.equal(batch["negative_ids"], expected["text_ids"])
    assert torch.equal(batch["negative_mask"], expected["text_mask"])


def test_training_and_sources_without_negatives_carry_none(tokenize) -> None:
    scenes = SyntheticScenes("train", num_images=4, image_size=32, captions_per_image=2)
    data = VLPDataModule(
        train=scenes, batch_size=4, num_workers=0, image_size=32, tokenize=tokenize
    )
    assert "negative_ids" not in next(iter(data.train_dataloader()))
    sample = Sample(torch.zeros(3, 4, 4), ["a red circle"], 5, 1, Counter())
    assert "negative_ids" not in Collate(tokenize)([sample])


def test_negatives_that_no_longer_line_up_with_the_captions_are_dropped() -> None:
    negatives = [[{"kind": "shape_change", "text": "a blue star"}], [{"kind": "x", "text": "b"}]]
    assert hard_negative_texts({"hard_negatives": negatives}, 2) == [["a blue star"], ["b"]]
    assert hard_negative_texts({"hard_negatives": negatives}, 3) == []
    dropped = {"hard_negatives": negatives, "dropped_captions": {"empty_caption": 1}}
    assert hard_negative_texts(dropped, 2) == []
    assert hard_negative_texts({"hard_negatives": "oops"}, 2) == []
    assert hard_negative_texts({"hard_negatives": [[{"kind": "x"}], []]}, 2) == []
    assert hard_negative_texts({}, 2) == []


def test_probe_attributes_keep_only_class_indices() -> None:
    meta = {"attributes": {"colour": 3, "count": 2, "size": "large", "bad": -1, "flag": True}}
    assert probe_attributes(meta) == {"colour": 3, "count": 2}
    assert probe_attributes({"attributes": [1, 2]}) == {}
    assert probe_attributes({}) == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_keeps_the_hard_negatives_and_probe_attributes(
    fmt: str, tmp_path: Path, tokenize
) -> None:
    scenes = SyntheticScenes("val", num_images=4, image_size=32, captions_per_image=2)
    path = write_records((scenes[i] for i in range(len(scenes))), tmp_path, fmt, shard_size=4)
    (expected,) = eval_batches(scenes, tokenize)
    (got,) = eval_batches(open_written(path, fmt), tokenize)
    for field in ("negative_ids", "negative_mask", "negative_text_index"):
        assert torch.equal(got[field], expected[field]), field
    assert (
        got["attributes"]
        == expected["attributes"]
        == [scenes[i].meta["attributes"] for i in range(len(scenes))]
    )


def test_second_view_is_built_only_when_an_objective_needs_it(tokenize) -> None:
    scenes = SyntheticScenes("train", num_images=8, image_size=32)
    plain = VLPDataModule(
        train=scenes, batch_size=4, num_workers=0, image_size=32, tokenize=tokenize
    )
    assert "images_aug" not in next(iter(plain.train_dataloader()))
    tcl = VLPDataModule(
        train=scenes,
        batch_size=4,
        num_workers=0,
        image_size=32,
        tokenize=tokenize,
        needs=frozenset({"images", "text", "images_aug"}),
    )
    batch = next(iter(tcl.train_dataloader()))
    assert batch["images_aug"].shape == batch["images"].shape
    assert not torch.equal(batch["images_aug"], batch["images"])


def test_a_reloaded_streamed_loader_counts_only_its_own_dropped_batches(
    tokenize, tmp_path: Path, monkeypatch
) -> None:
    """With ``reload_dataloaders_every_n_epochs`` each epoch gets a new loader: the counts of
    the loaders made before it are no longer this epoch's."""
    scenes = SyntheticScenes("train", num_images=8, image_size=32, captions_per_image=1)
    shards = write_records((scenes[i] for i in range(8)), tmp_path, "webdataset", shard_size=8)
    data = VLPDataModule(train=open_written(shards, "webdataset"), batch_size=2, num_workers=0,
                         image_size=32, tokenize=tokenize)  # fmt: skip
    agreements = iter([False])  # as if another rank had 1 batch: this rank drops its other 3
    monkeypatch.setattr(lockstep, "any_rank", lambda flag, device: next(agreements, True))
    assert len(list(data.train_dataloader())) == 1
    assert data.dropped_batches == 3
    monkeypatch.undo()
    assert len(list(data.train_dataloader())) == 4
    assert data.dropped_batches == 0
