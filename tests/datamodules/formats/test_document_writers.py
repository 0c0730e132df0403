"""Documents written as OBELICS or MMC4 JSONL read back as the generator made them."""

from __future__ import annotations

import json

import pytest

from tests.datamodules.formats.videos import solid
from vlp.datamodules.formats.document_writers import write_documents
from vlp.datamodules.formats.interleaved import InterleavedJsonl
from vlp.datamodules.media_text import MediaTextRecord
from vlp.datamodules.synthetic.media_text import SyntheticDocuments


def as_comparable(record: MediaTextRecord) -> list[str | bytes]:
    """Texts as they are, each image as its pixels."""
    return [
        part if isinstance(part, str) else b"".join(image.tobytes() for image in part)
        for part in record.segments
    ]


@pytest.mark.parametrize("fmt", ["obelics", "mmc4"])
def test_written_documents_read_back_with_their_images_in_reading_order(tmp_path, fmt):
    generated = SyntheticDocuments("train", 3, image_size=32)
    documents = [generated[i] for i in range(3)]
    path = write_documents(documents, tmp_path, fmt, shard_size=4)
    images = sum(1 for d in documents for part in d.segments if not isinstance(part, str))
    assert len(list(tmp_path.glob("images/*/*.png"))) == images
    assert len(list(tmp_path.glob("images/*"))) == -(-images // 4)
    row = json.loads(path.read_text().splitlines()[0])
    assert set(row) == ({"texts", "images"} if fmt == "obelics" else {"text_list", "image_info"})
    read = InterleavedJsonl(path, max_media=10, on_error="raise")
    assert [as_comparable(read[i]) for i in range(3)] == [as_comparable(d) for d in documents]
    assert all(read[i].interleaved for i in range(3))


def test_what_a_layout_cannot_hold_is_refused(tmp_path):
    ends_in_an_image = MediaTextRecord(("a sentence", (solid(10),)), interleaved=True, key="d/0")
    write_documents([ends_in_an_image], tmp_path / "obelics", "obelics")  # OBELICS holds it
    with pytest.raises(ValueError, match="d/0"):
        write_documents([ends_in_an_image], tmp_path / "mmc4", "mmc4")
    clip = MediaTextRecord(((solid(1), solid(2)), "moving"), interleaved=False, key="c/0")
    with pytest.raises(ValueError, match="single images"):
        write_documents([clip], tmp_path / "clip", "obelics")
    with pytest.raises(ValueError, match="document format"):
        write_documents([], tmp_path / "x", "html")
