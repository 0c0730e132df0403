"""``vlp data`` writes every split of the embedded scenes in the chosen format, readable back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlp.data_command import main
from vlp.datamodules.formats.clip_writers import open_written_clips
from vlp.datamodules.formats.interleaved import InterleavedJsonl
from vlp.datamodules.formats.writers import open_written
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.media_text import SyntheticClips, SyntheticDocuments


@pytest.mark.parametrize("fmt", ["webdataset", "csv"])
def test_writes_readable_splits_and_class_names(tmp_path: Path, fmt: str) -> None:
    main(["--out", str(tmp_path), "--format", fmt, "--train", "5", "--val", "3", "--test", "2"])
    classes = json.loads((tmp_path / "classes.json").read_text())
    assert classes["class_names"] == list(SyntheticScenes("val", 1).class_names)
    patterns = {"webdataset": "train/shard-*.tar", "csv": "train/manifest.csv"}
    assert list(tmp_path.glob(patterns[fmt]))
    if fmt == "csv":
        records = open_written(tmp_path / "val/manifest.csv", "csv")
        assert len(records) == 3
        assert records[0].captions == SyntheticScenes("val", 3)[0].captions


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises((ValueError, SystemExit)):
        main(["--out", str(tmp_path), "--format", "parquet"])


@pytest.mark.parametrize("fmt", ["jsonl", "webdataset"])
def test_writes_clips_that_read_back_as_the_generator_made_them(tmp_path: Path, fmt: str) -> None:
    args = ["--out", str(tmp_path), "--media", "clips", "--format", fmt, "--num_frames", "3"]
    main([*args, "--train", "2", "--val", "1", "--test", "1", "--image_size", "16"])
    written = {"jsonl": "val/clips.jsonl", "webdataset": "val/shard-{000000..000000}.tar"}[fmt]
    clips = list(open_written_clips(tmp_path / written, fmt, num_frames=3, on_error="raise"))
    frames, caption = SyntheticClips("val", 1, num_frames=3, image_size=16)[0].segments
    assert len(clips) == 1 and clips[0].segments[1] == caption
    assert [f.tobytes() for f in clips[0].segments[0]] == [f.tobytes() for f in frames]
    assert not (tmp_path / "classes.json").exists()


def test_clips_in_an_image_format_are_refused(tmp_path: Path) -> None:
    with pytest.raises((ValueError, SystemExit), match="clips are written as"):
        main(["--out", str(tmp_path), "--media", "clips", "--format", "coco"])


def test_writes_documents_that_read_back_as_the_generator_made_them(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--media", "documents", "--format", "mmc4"]
    main([*args, "--train", "2", "--val", "1", "--test", "1", "--image_size", "16"])
    read = InterleavedJsonl(tmp_path / "val/documents.jsonl", max_media=10, on_error="raise")
    generated = SyntheticDocuments("val", 1, image_size=16)[0]
    assert len(read) == 1
    texts = [part for part in read[0].segments if isinstance(part, str)]
    assert texts == [part for part in generated.segments if isinstance(part, str)]
