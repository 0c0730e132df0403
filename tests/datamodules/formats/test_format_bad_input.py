"""Bad images and captions become counted skips, or errors when failing fast."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image, ImageFile

from vlp.datamodules.formats.decode import decode_image
from vlp.datamodules.formats.manifest import CsvManifest, JsonlManifest
from vlp.datamodules.records import BadSampleError, ImageTextRecord, SkippedRecord


def png(width: int = 4, height: int = 4) -> bytes:
    buffer = io.BytesIO()
    # noise, so the compressed pixel data is most of the file and truncation cuts it
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_dir(tmp_path):
    (tmp_path / "good.png").write_bytes(png())
    (tmp_path / "corrupt.png").write_bytes(b"<html>not an image</html>")
    whole = png(16, 16)
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) * 2 // 3])
    (tmp_path / "big.png").write_bytes(png(20, 20))
    return tmp_path


# (image, caption bytes, expected reason); max_pixels=300 makes big.png too large
CASES = [
    ("corrupt.png", b"fine", "corrupt"),
    ("truncated.png", b"fine", "corrupt"),
    ("absent.png", b"fine", "missing"),
    ("big.png", b"fine", "too_large"),
    ("good.png", b"   ", "empty_caption"),
    ("good.png", b"caf\xe9", "bad_encoding"),  # latin-1, not UTF-8
]


def write_jsonl(path, rows: list[tuple[str, bytes, int]]) -> None:
    # Captions are spliced in as raw bytes so invalid UTF-8 reaches the reader.
    with open(path, "wb") as file:
        for image, caption, image_id in rows:
            head = json.dumps({"image": image, "image_id": image_id})[:-1].encode()
            file.write(head + b', "caption": "' + caption + b'"}\n')


def write_csv(path, rows: list[tuple[str, bytes, int]]) -> None:
    lines = [b"image,caption,image_id"]
    lines += [
        f"{image},".encode() + caption + f",{image_id}".encode()
        for image, caption, image_id in rows
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize(
    ("manifest_type", "write"), [(JsonlManifest, write_jsonl), (CsvManifest, write_csv)]
)
@pytest.mark.parametrize(("image", "caption", "reason"), CASES)
def test_bad_sample_is_skipped_or_raised(manifest_type, write, image, caption, reason, image_dir):
    manifest = image_dir / "manifest"
    write(manifest, [(image, caption, 0), ("good.png", b"a good one", 1)])

    skipped, good = manifest_type(manifest, max_pixels=300)
    assert skipped == SkippedRecord(reason, str(image_dir / image))
    assert isinstance(good, ImageTextRecord)

    failing = manifest_type(manifest, on_error="raise", max_pixels=300)
    with pytest.raises(BadSampleError) as raised:
        failing[0]
    assert (raised.value.reason, raised.value.key) == (reason, str(image_dir / image))
    assert isinstance(failing[1], ImageTextRecord)


@pytest.mark.parametrize(
    ("manifest_type", "write"), [(JsonlManifest, write_jsonl), (CsvManifest, write_csv)]
)
def test_partly_bad_captions_are_dropped_and_counted(manifest_type, write, image_dir):
    captions = [b"kept", b" ", b"\xff", b"also kept"]
    write(image_dir / "m", [("good.png", caption, 0) for caption in captions])

    for on_error in ("skip", "raise"):
        (record,) = manifest_type(image_dir / "m", on_error=on_error)
        assert record.captions == ("kept", "also kept")
        assert record.meta["dropped_captions"] == {"empty_caption": 1, "bad_encoding": 1}


def test_list_caption_all_bad_skips_whole_record(image_dir):
    (image_dir / "m.jsonl").write_text(json.dumps({"image": "good.png", "caption": ["", " "]}))
    assert list(JsonlManifest(image_dir / "m.jsonl")) == [
        SkippedRecord("empty_caption", str(image_dir / "good.png"))
    ]


def test_unparseable_row_is_a_counted_skip(image_dir):
    good = json.dumps({"image": "good.png", "caption": "ok"})
    (image_dir / "m.jsonl").write_text(f"{good}\n{{broken\n[1, 2]\n")
    items = list(JsonlManifest(image_dir / "m.jsonl"))
    assert [type(item) for item in items] == [ImageTextRecord, SkippedRecord, SkippedRecord]
    assert items[1:] == [
        SkippedRecord("corrupt", f"{image_dir / 'm.jsonl'}:2"),
        SkippedRecord("bad_field", f"{image_dir / 'm.jsonl'}:3"),
    ]


def test_header_size_is_checked_before_decoding(image_dir, monkeypatch):
    def never(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    with pytest.raises(BadSampleError, match="too_large"):
        decode_image(image_dir / "big.png", "big", max_pixels=399)


def test_pil_bomb_guard_is_a_too_large_skip(image_dir, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warns above 100, raises above 200
    for size, name in ((12, "warned.png"), (20, "big.png")):
        (image_dir / name).write_bytes(png(size, size))
        with pytest.raises(BadSampleError) as raised:
            decode_image(image_dir / name, name, max_pixels=10**9)
        assert raised.value.reason == "too_large"


def test_bytes_decode_to_rgb(image_dir):
    image = decode_image((image_dir / "good.png").read_bytes(), "good")
    assert image.mode == "RGB"
    assert image.size == (4, 4)


def test_truncated_images_cannot_be_let_through(image_dir, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(image_dir / "truncated.png", "truncated")


def test_on_error_must_be_skip_or_raise(image_dir):
    (image_dir / "m.jsonl").write_text(json.dumps({"image": "good.png", "caption": "ok"}))
    with pytest.raises(ValueError, match="on_error"):
        JsonlManifest(image_dir / "m.jsonl", on_error="ignore")


@pytest.mark.parametrize(
    ("samples", "mode", "fmt"),
    [
        (np.array([[0, 257 * 128, 65535]], dtype=np.uint16), None, "PNG"),  # I;16
        (np.array([[0, 257 * 128, 65535, 70000, -5]], dtype=np.int32), "I", "TIFF"),
        (np.array([[0.0, 128 / 255, 1.0, 2.0, -1.0]], dtype=np.float32), "F", "TIFF"),
    ],
    ids=["I;16", "I", "F"],
)
def test_wide_grayscale_is_scaled_to_8_bits_not_clipped_to_white(samples, mode, fmt):
    """Black, mid grey and full scale of each mode become 0, 128 and 255; values beyond
    its range are clipped to them."""
    buffer = io.BytesIO()
    Image.fromarray(samples, mode).save(buffer, format=fmt)
    image = decode_image(buffer.getvalue(), "wide")
    assert image.mode == "RGB"
    expected = [0, 128, 255, 255, 0][: samples.shape[1]]
    assert np.asarray(image)[0].tolist() == [[v, v, v] for v in expected]


def test_a_csv_field_past_the_size_limit_names_its_file_and_line(image_dir):
    long_caption = "a" * (csv.field_size_limit() + 1)
    (image_dir / "m.csv").write_text(f"image,caption\ngood.png,ok\ngood.png,{long_caption}\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(image_dir / 'm.csv'))}:3: .*limit"):
        CsvManifest(image_dir / "m.csv")
