"""Clips written as video files or shards read back as the generator's clips."""

from __future__ import annotations

import pytest
import torch

from tests.objectives.flamingo_tiny import tiny_data, tiny_flamingo, tiny_model
from vlp.datamodules.formats.clip_writers import open_written_clips, write_clips
from vlp.datamodules.media_text import MediaTextRecord
from vlp.datamodules.synthetic.media_text import SyntheticClips


@pytest.mark.parametrize("fmt", ["jsonl", "webdataset"])
def test_written_clips_train_as_the_generated_clips(tmp_path, fmt):
    """FFV1 is lossless: the LM objective gets exactly the generator's frames and captions."""
    generated = SyntheticClips("train", 3, num_frames=3, image_size=32)
    path = write_clips((generated[i] for i in range(3)), tmp_path, fmt, shard_size=2)
    layout = {"jsonl": "videos/*/*.mkv", "webdataset": "shard-*.tar"}[fmt]
    assert len(list(tmp_path.glob(layout))) == {"jsonl": 3, "webdataset": 2}[fmt]
    assert len(list(tmp_path.glob("videos/*"))) == (2 if fmt == "jsonl" else 0)
    from_files = open_written_clips(path, fmt, num_frames=3, on_error="raise")
    assert [r.segments[1] for r in from_files] == [generated[i].segments[1] for i in range(3)]
    model = tiny_model([tiny_flamingo()])
    batches = []
    for source in (generated, from_files):
        data = tiny_data(model, train=source, shuffle=False)
        data.batch_size = 3
        batches.append(next(iter(data.train_dataloader())))
    expected, got = batches
    assert got["media"].shape == (3, 1, 3, 3, 32, 32)
    assert torch.equal(got["media"], expected["media"])
    assert torch.equal(got["lm_ids"], expected["lm_ids"])
    assert torch.equal(got["lm_labels"], expected["lm_labels"])


def test_records_that_are_not_one_clip_and_unknown_codecs_are_refused(tmp_path):
    clip = SyntheticClips("train", 1, num_frames=2, image_size=16)[0]
    document = MediaTextRecord((clip.segments[0], "text", "more"), interleaved=True, key="doc/0")
    with pytest.raises(ValueError, match="doc/0"):
        write_clips([document], tmp_path, "jsonl")
    with pytest.raises(ValueError, match="codec"):
        write_clips([clip], tmp_path, "jsonl", codec="vp9")
    with pytest.raises(ValueError, match="clip format"):
        write_clips([clip], tmp_path, "csv")
