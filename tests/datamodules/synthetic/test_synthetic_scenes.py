"""The synthetic scenes dataset: determinism, splits, images and the scene structure."""

from __future__ import annotations

import json
import pickle
from itertools import combinations

import numpy as np
import pytest

from vlp.datamodules.records import ImageTextRecord
from vlp.datamodules.synthetic import COLOURS, SHAPES, SIZES, SPLITS, SyntheticScenes


def _pixels(record: ImageTextRecord) -> np.ndarray:
    return np.asarray(record.image)


def test_same_seed_gives_identical_items_in_any_order() -> None:
    forward = SyntheticScenes(num_images=20, seed=3)
    backward = SyntheticScenes(num_images=20, seed=3)
    first = [forward[i] for i in range(20)]
    second = [backward[i] for i in reversed(range(20))][::-1]
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(_pixels(a), _pixels(b))
        assert a.captions == b.captions
        assert a.meta == b.meta
        assert (a.image_id, a.label, a.key) == (b.image_id, b.label, b.key)


def test_different_index_seed_or_split_gives_a_different_scene() -> None:
    base = SyntheticScenes("train", num_images=10, seed=0)
    others = [
        SyntheticScenes("train", num_images=10, seed=1),
        SyntheticScenes("val", num_images=10, seed=0),
        SyntheticScenes("test", num_images=10, seed=0),
    ]
    for i in range(10):
        assert not np.array_equal(_pixels(base[i]), _pixels(base[(i + 1) % 10]))
        for other in others:
            assert not np.array_equal(_pixels(base[i]), _pixels(other[i]))
            assert base[i].meta["objects"] != other[i].meta["objects"]


def test_image_ids_are_unique_across_splits_and_keys_name_the_item() -> None:
    ids = [SyntheticScenes(split, num_images=50)[i].image_id for split in SPLITS for i in range(50)]
    assert len(set(ids)) == len(ids)
    record = SyntheticScenes("val", num_images=20)[12]
    assert record.key == "synthetic/val/000012"
    assert record.image_id == SyntheticScenes("val", num_images=20)[12].image_id


def test_unknown_split_is_rejected_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="train, val, test"):
        SyntheticScenes("validation")


def test_length_and_out_of_range_index() -> None:
    dataset = SyntheticScenes(num_images=7)
    assert len(dataset) == 7
    assert len(list(dataset)) == 7  # iteration stops at IndexError
    with pytest.raises(IndexError):
        dataset[7]


@pytest.mark.parametrize("image_size", [32, 64, 96, 224])
def test_images_are_rgb_at_the_requested_size_and_the_scene_does_not_depend_on_it(
    image_size: int,
) -> None:
    record = SyntheticScenes(num_images=3, image_size=image_size)[2]
    assert record.image.mode == "RGB"
    assert record.image.size == (image_size, image_size)
    assert record.meta["objects"] == SyntheticScenes(num_images=3)[2].meta["objects"]
    assert record.captions == SyntheticScenes(num_images=3)[2].captions


def test_label_is_the_shape_of_the_first_and_largest_object() -> None:
    dataset = SyntheticScenes(num_images=300)
    assert dataset.class_names == SHAPES
    labels = set()
    for record in dataset:
        objects = record.meta["objects"]
        assert record.label == SHAPES.index(objects[0]["shape"])
        assert all(SIZES.index(objects[0]["size"]) >= SIZES.index(o["size"]) for o in objects)
        labels.add(record.label)
    assert labels == set(range(len(SHAPES)))


@pytest.mark.parametrize("max_objects", [1, 3, 4])
def test_objects_are_distinct_in_frame_and_do_not_overlap(max_objects: int) -> None:
    counts = set()
    for record in SyntheticScenes(num_images=150, max_objects=max_objects):
        objects = record.meta["objects"]
        counts.add(len(objects))
        assert len({o["shape"] for o in objects}) == len(objects)
        assert len({o["colour"] for o in objects}) == len(objects)
        for o in objects:
            assert o["shape"] in SHAPES and o["colour"] in COLOURS and o["size"] in SIZES
            assert o["radius"] <= o["x"] <= 1 - o["radius"]
            assert o["radius"] <= o["y"] <= 1 - o["radius"]
        for a, b in combinations(objects, 2):
            assert np.hypot(a["x"] - b["x"], a["y"] - b["y"]) > a["radius"] + b["radius"]
    assert counts == set(range(1, max_objects + 1))


def test_each_object_is_drawn_in_its_named_colour_at_its_position() -> None:
    palette = np.array(list(COLOURS.values()), dtype=float)
    names = list(COLOURS)
    for record in SyntheticScenes(num_images=60, image_size=96, background_noise=1.0):
        pixels = _pixels(record).astype(float)
        for o in record.meta["objects"]:
            centre = pixels[int(o["y"] * 96), int(o["x"] * 96)]
            nearest = names[int(np.argmin(np.linalg.norm(palette - centre, axis=1)))]
            assert nearest == o["colour"], (record.key, o)


def test_background_noise_controls_background_variation() -> None:
    def background_std(noise: float) -> float:
        record = SyntheticScenes(num_images=1, background_noise=noise)[0]
        pixels = _pixels(record).astype(float)
        grid = (np.arange(64) + 0.5) / 64
        free = np.ones((64, 64), dtype=bool)
        for o in record.meta["objects"]:
            free &= np.hypot(grid[None, :] - o["x"], grid[:, None] - o["y"]) > o["radius"] + 0.03
        return float(pixels[free].std(axis=0).mean())

    assert background_std(0.0) < 8.0 < 20.0 < background_std(1.0)


@pytest.mark.parametrize(
    ("knob", "value"),
    [("background_noise", 1.5), ("max_objects", 0), ("max_objects", 5), ("image_size", 8)],
)
def test_out_of_range_knobs_are_rejected_at_construction(knob: str, value: float) -> None:
    with pytest.raises(ValueError, match=knob):
        SyntheticScenes(num_images=1, **{knob: value})


@pytest.mark.parametrize("captions_per_image", [1, 5, 8])
def test_captions_per_image_sets_captions_and_leaves_the_image_alone(
    captions_per_image: int,
) -> None:
    record = SyntheticScenes(num_images=4, captions_per_image=captions_per_image)[3]
    assert len(record.captions) == captions_per_image
    assert len(record.meta["hard_negatives"]) == captions_per_image
    assert np.array_equal(_pixels(record), _pixels(SyntheticScenes(num_images=4)[3]))


def test_meta_is_json_serialisable_and_the_dataset_pickles_for_workers() -> None:
    dataset = SyntheticScenes(num_images=5)
    record = dataset[4]
    assert json.loads(json.dumps(record.meta)) == record.meta
    clone = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(_pixels(clone[4]), _pixels(record))
    assert clone.prompt_templates == dataset.prompt_templates


def test_attributes_are_the_main_objects_colour_and_the_object_count() -> None:
    dataset = SyntheticScenes(num_images=20)
    counts = set()
    for index in range(len(dataset)):
        record = dataset[index]
        objects = record.meta["objects"]
        assert record.meta["attributes"] == {
            "colour": list(COLOURS).index(objects[0]["colour"]),
            "count": len(objects),
        }
        counts.add(len(objects))
    assert len(counts) > 1
