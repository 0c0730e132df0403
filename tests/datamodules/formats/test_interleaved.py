"""Interleaved JSONL (OBELICS and MMC4 layouts): images in reading order, caps, bad documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlp.datamodules.formats.interleaved import InterleavedJsonl
from vlp.datamodules.records import BadSampleError, SkippedRecord


def write_images(folder: Path, levels: list[int]) -> None:
    for level in levels:
        Image.new("RGB", (3, 3), (level, 0, 0)).save(folder / f"{level}.png")


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def layout(record) -> list[str | int]:
    """Texts, and each image as its red level."""
    return [s if isinstance(s, str) else s[0].getpixel((0, 0))[0] for s in record.segments]


def test_both_layouts_give_images_in_reading_order(tmp_path):
    write_images(tmp_path, [10, 20, 30])
    obelics = {"texts": ["intro", None, "red", None], "images": [None, "10.png", None, "20.png"]}
    # MMC4 lists images in any order; each goes before its matched sentence
    mmc4 = {
        "text_list": ["s0", "s1", "s2"],
        "image_info": [
            {"image_name": "30.png", "matched_text_index": 2},
            {"image_name": "10.png", "matched_text_index": 0},
        ],
    }
    source = InterleavedJsonl(write_jsonl(tmp_path / "docs.jsonl", [obelics, mmc4]))
    assert len(source) == 2
    assert layout(source[0]) == ["intro", 10, "red", 20]
    assert layout(source[1]) == [10, "s0", "s1", 30, "s2"]
    assert source[0].interleaved


def test_documents_keep_their_first_max_media_images(tmp_path):
    write_images(tmp_path, [10, 20, 30])
    row = {"texts": [None, "a", None, "b", None, "c"],
           "images": ["10.png", None, "20.png", None, "30.png", None]}  # fmt: skip
    source = InterleavedJsonl(write_jsonl(tmp_path / "docs.jsonl", [row]), max_media=2)
    assert layout(source[0]) == [10, "a", 20, "b"]


def test_bad_documents_are_skipped_with_their_reason_or_raise(tmp_path):
    write_images(tmp_path, [10])
    rows = [
        {"texts": ["no image"], "images": [None]},
        {"texts": ["a", None], "images": [None, "missing.png"]},
        {"texts": ["a"], "images": [None, "10.png"]},  # lists of different lengths
        "{not json",
        {"texts": [None, "ok"], "images": ["10.png", None]},
    ]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    source = InterleavedJsonl(path)
    reasons = [r.reason if isinstance(r, SkippedRecord) else "ok" for r in source]
    assert reasons == ["bad_field", "missing", "bad_field", "bad_field", "ok"]
    with pytest.raises(BadSampleError, match="missing"):
        InterleavedJsonl(path, on_error="raise")[1]


def test_text_that_is_not_utf8_is_a_bad_encoding_naming_its_line(tmp_path):
    write_images(tmp_path, [10])
    good = json.dumps({"texts": [None, "ok"], "images": ["10.png", None]}).encode()
    lines = [
        good,
        good.replace(b'"ok"', b'"caf\xe9"'),  # latin-1, not UTF-8
        good.replace(b'"ok"', b'"\\ud800"'),  # a lone surrogate, escaped in the JSON
        good,
    ]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = InterleavedJsonl(path)
    assert [r if isinstance(r, SkippedRecord) else layout(r) for r in source] == [
        [10, "ok"],
        SkippedRecord("bad_encoding", f"{path}:2"),
        SkippedRecord("bad_encoding", f"{path}:3"),
        [10, "ok"],
    ]
    with pytest.raises(BadSampleError, match=f"{path}:2: bad_encoding"):
        InterleavedJsonl(path, on_error="raise")[1]
