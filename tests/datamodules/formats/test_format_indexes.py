"""Hand-written manifests, COCO/Karpathy and HF files in the layouts found in the wild."""

from __future__ import annotations

import io
import json
import re

import datasets
import numpy as np
import pytest
from PIL import Image

from vlp.datamodules.formats.coco import CocoCaptions
from vlp.datamodules.formats.hf import HFDiskDataset
from vlp.datamodules.formats.manifest import CsvManifest, JsonlManifest
from vlp.datamodules.records import (
    NO_LABEL,
    BadSampleError,
    ImageTextRecord,
    SkippedRecord,
    stable_id,
)


def save_png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((2, 3, 3), value, dtype=np.uint8)).save(path)


def summary(source) -> list[tuple[tuple[str, ...], int, int]]:
    return [(r.captions, r.image_id, r.label) for r in source]


@pytest.fixture
def images(tmp_path):
    for name, value in (("a.png", 10), ("b.png", 20), ("sub/c.png", 30)):
        save_png(tmp_path / name, value)
    return tmp_path


def test_csv_rows_group_by_image_path_in_first_seen_order(images):
    (images / "m.csv").write_text(
        "image,caption,label\nb.png,b one,2\na.png,a one,\nb.png,b two,\nsub/c.png,c one,1\n",
        encoding="utf-8",
    )
    assert summary(CsvManifest(images / "m.csv")) == [
        (("b one", "b two"), stable_id("b.png"), 2),
        (("a one",), stable_id("a.png"), NO_LABEL),
        (("c one",), stable_id("sub/c.png"), 1),
    ]


def test_jsonl_groups_by_id_and_hashes_string_ids(images):
    rows = [
        {"img": "a.png", "text": "first", "image_id": "scene-a"},
        {"img": "b.png", "text": ["b1", "b2"], "image_id": 4},
        {"img": "a.png", "text": "second", "image_id": "scene-a"},
    ]
    (images / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    source = JsonlManifest(images / "m.jsonl", image_field="img", caption_field="text")
    assert summary(source) == [
        (("first", "second"), stable_id("scene-a"), NO_LABEL),
        (("b1", "b2"), 4, NO_LABEL),
    ]


def test_a_row_giving_an_earlier_rows_id_to_another_image_is_a_bad_field(images):
    rows = [
        {"image": "a.png", "caption": "a one", "image_id": 5},
        {"image": "b.png", "caption": "b one", "image_id": 5},
        {"image": "a.png", "caption": "a two", "image_id": 5},
    ]
    path = images / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    record, conflict = JsonlManifest(path)
    assert (record.captions, record.image_id) == (("a one", "a two"), 5)
    assert record.image.getpixel((0, 0)) == (10, 10, 10)  # a.png's pixels
    assert conflict == SkippedRecord("bad_field", f"{path}:2")
    with pytest.raises(BadSampleError, match=rf"{re.escape(str(path))}:2: bad_field.*b\.png"):
        JsonlManifest(path, on_error="raise")[1]


def test_image_root_overrides_manifest_folder(images, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("manifests")
    (elsewhere / "m.csv").write_text("image,caption\na.png,hi\n")
    (record,) = CsvManifest(elsewhere / "m.csv", image_root=images)
    assert np.array(record.image)[0, 0, 0] == 10
    assert list(CsvManifest(elsewhere / "m.csv")) == [
        SkippedRecord("missing", str(elsewhere / "a.png"))
    ]


@pytest.mark.parametrize(
    ("manifest_type", "text", "kwargs", "field"),
    [
        (CsvManifest, "path,caption\na.png,hi\n", {}, "image"),
        (CsvManifest, "image,caption\na.png,hi\n", {"caption_field": "text"}, "text"),
        (JsonlManifest, '{"image": "a.png", "text": "hi"}\n', {}, "caption"),
    ],
)
def test_missing_required_field_names_file_and_field(images, manifest_type, text, kwargs, field):
    (images / "broken.manifest").write_text(text)
    with pytest.raises(ValueError, match=r"broken\.manifest") as raised:
        manifest_type(images / "broken.manifest", **kwargs)
    assert repr(field) in str(raised.value)
    assert "fields found" in str(raised.value)


def test_bad_label_or_image_field_is_a_bad_field_skip(images):
    rows = [{"image": "a.png", "caption": "x", "label": "cat"}, {"image": 5, "caption": "y"}]
    (images / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert [s.reason for s in JsonlManifest(images / "m.jsonl")] == ["bad_field", "bad_field"]


def test_coco_captions_group_annotations_per_image(images):
    data = {
        "images": [{"id": 42, "file_name": "a.png"}, {"id": 7, "file_name": "sub/c.png"}],
        "annotations": [
            {"id": 1, "image_id": 7, "caption": "c first"},
            {"id": 2, "image_id": 42, "caption": "a only"},
            {"id": 3, "image_id": 7, "caption": "c second"},
        ],
    }
    (images / "captions.json").write_text(json.dumps(data))
    assert summary(CocoCaptions(images / "captions.json", images)) == [
        (("a only",), 42, NO_LABEL),
        (("c first", "c second"), 7, NO_LABEL),
    ]
    with pytest.raises(ValueError, match="one split"):
        CocoCaptions(images / "captions.json", images, split="train")


def test_coco_annotations_of_no_listed_image_are_counted(images):
    data = {
        "images": [{"id": 42, "file_name": "a.png"}],
        "annotations": [
            {"id": 1, "image_id": 42, "caption": "a only"},
            {"id": 2, "image_id": 9, "caption": "lost one"},
            {"id": 3, "image_id": 9, "caption": "lost two"},
        ],
    }
    path = images / "captions.json"
    path.write_text(json.dumps(data))
    record, orphans = CocoCaptions(path, images)
    assert record.captions == ("a only",)
    assert orphans == SkippedRecord("bad_field", f"{path}:annotations[1]")


def test_a_caption_file_that_is_not_json_names_the_file(images):
    (images / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"broken\.json"):
        CocoCaptions(images / "broken.json", images)


def test_karpathy_split_filter(images):
    def entry(filename, split, **ids):
        return {
            "filename": filename,
            "split": split,
            "sentences": [{"raw": f"{filename} says hi"}],
            **ids,
        }

    data = {
        "images": [
            {**entry("c.png", "train", cocoid=11, imgid=0), "filepath": "sub"},
            entry("a.png", "val", imgid=1),
            entry("b.png", "restval", cocoid=13, imgid=2),
        ]
    }
    (images / "dataset.json").write_text(json.dumps(data))
    ids = {
        split: [r.image_id for r in CocoCaptions(images / "dataset.json", images, split=split)]
        for split in ("train", "val", ("train", "restval"), None)
    }
    assert ids == {"train": [11], "val": [1], ("train", "restval"): [11, 13], None: [11, 1, 13]}
    with pytest.raises(ValueError, match="unknown splits"):
        CocoCaptions(images / "dataset.json", images, split="validation")


def test_caption_file_without_images_key_is_refused(images):
    (images / "odd.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=r"odd\.json.*'images'"):
        CocoCaptions(images / "odd.json", images)


def test_hf_path_column_groups_rows_by_path(images):
    table = datasets.Dataset.from_dict(
        {
            "file": [str(images / "a.png"), str(images / "b.png"), str(images / "a.png")],
            "text": ["a1", "b1", "a2"],
        }
    )
    table.save_to_disk(str(images / "hf"))
    source = HFDiskDataset(images / "hf", image_column="file", caption_column="text")
    assert summary(source) == [
        (("a1", "a2"), stable_id(str(images / "a.png")), NO_LABEL),
        (("b1",), stable_id(str(images / "b.png")), NO_LABEL),
    ]


def test_hf_dataset_dict_needs_a_known_split(images):
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    split = datasets.Dataset.from_dict(
        {"image": [{"bytes": buffer.getvalue(), "path": None}], "caption": ["hi"]},
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string")}
        ),
    )
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(images / "hf"))
    (record,) = HFDiskDataset(images / "hf", split="test")
    assert isinstance(record, ImageTextRecord)
    with pytest.raises(ValueError, match=r"splits found: \['test', 'train'\]"):
        HFDiskDataset(images / "hf")
    with pytest.raises(ValueError, match=r"'text'.*fields found: \['caption', 'image'\]"):
        HFDiskDataset(images / "hf", split="train", caption_column="text")
