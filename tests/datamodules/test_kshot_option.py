"""data.kshot: the training split cut to k labelled images per class, the same every time."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.tiny import TINY_TEXT
from vlp.data_command import write_synthetic
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.formats.manifest import JsonlManifest
from vlp.datamodules.kshot import KShot, record_labels
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder

TRAIN = SyntheticScenes("train", 40, image_size=32)
LABELS = [TRAIN[i].label for i in range(len(TRAIN))]


@pytest.fixture(scope="module")
def tokenize():
    return TextEncoder(config=TINY_TEXT, max_length=16).tokenize


def trained_ids(kshot: KShot, tokenize, batch_size: int = 2) -> list[int]:
    data = VLPDataModule(
        train=TRAIN,
        batch_size=batch_size,
        num_workers=0,
        image_size=32,
        tokenize=tokenize,
        kshot=kshot,
    )
    return sorted(int(i) for batch in data.train_dataloader() for i in batch["image_ids"])


def test_the_same_k_and_seed_train_on_the_same_images(tokenize) -> None:
    first = trained_ids(KShot(k=2, seed=1), tokenize)
    assert first == trained_ids(KShot(k=2, seed=1), tokenize)
    assert first != trained_ids(KShot(k=2, seed=2), tokenize)
    indices = [image_id % 10**9 for image_id in first]
    assert Counter(LABELS[i] for i in indices) == {label: 2 for label in set(LABELS)}


def test_a_kshot_set_smaller_than_a_batch_trains_as_one_batch(tokenize) -> None:
    classes = len(set(LABELS))
    with pytest.warns(UserWarning, match=f"{classes} samples per rank, fewer than"):
        one_batch = trained_ids(KShot(k=1, seed=1), tokenize, batch_size=32)
    assert len(one_batch) == classes
    assert one_batch == trained_ids(KShot(k=1, seed=1), tokenize, batch_size=1)


def test_indexed_formats_give_labels_without_decoding_images(tmp_path) -> None:
    write_synthetic(tmp_path, train=12, val=1, test=1)
    manifest = JsonlManifest(tmp_path / "train/manifest.jsonl")
    assert record_labels(manifest) == [manifest[i].label for i in range(len(manifest))]
    scenes = SyntheticScenes("train", 12)  # write_synthetic's defaults
    assert record_labels(manifest) == [scenes[i].label for i in range(12)]


def test_kshot_needs_a_training_source() -> None:
    with pytest.raises(ValueError, match="draws from"):
        VLPDataModule(kshot=KShot(k=1))
