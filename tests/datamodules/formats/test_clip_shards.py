"""Clip shards (video2dataset layout): clips decoded, bad ones counted, split, cut shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.datamodules.formats.videos import levels, solid
from vlp.datamodules.formats.clip_shards import WebDatasetClips
from vlp.datamodules.formats.clip_writers import write_video
from vlp.datamodules.formats.split import current_consumer
from vlp.datamodules.media_text import as_media_samples
from vlp.datamodules.records import SkippedRecord


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def clip_bytes(tmp_path: Path, first_level: int, count: int = 8) -> bytes:
    video = write_video(tmp_path / "clip.mkv", [solid(first_level + 10 * k) for k in range(count)])
    return video.read_bytes()


def test_clips_decode_with_txt_or_json_captions_and_bad_ones_are_counted(tmp_path):
    shard = write_shard(
        tmp_path / "00000.tar",
        [
            ("000.mkv", clip_bytes(tmp_path, 0)),
            ("000.txt", b"a clip"),
            ("001.mp4", clip_bytes(tmp_path, 100)),
            ("001.json", json.dumps({"caption": "from json", "url": "x"}).encode()),
            ("002.mp4", b"not a video"),
            ("002.txt", b"corrupt"),
            ("003.txt", b"no video"),
            ("004.mkv", clip_bytes(tmp_path, 0)),
            ("004.txt", b"   "),
        ],
    )
    records = list(WebDatasetClips(shard, num_frames=2))
    assert [levels(r) for r in records[:2]] == [[20, 60], [120, 160]]  # frames 2 and 6 of 8
    assert [r.segments[1] for r in records[:2]] == ["a clip", "from json"]
    assert records[0].key == f"{shard}:000" and not records[0].interleaved
    assert records[2:] == [
        SkippedRecord("corrupt", f"{shard}:002"),
        SkippedRecord("missing", f"{shard}:003"),
        SkippedRecord("empty_caption", f"{shard}:004"),
    ]


def test_consumers_share_the_clips_and_the_loader_reaches_the_source(tmp_path):
    urls = []
    for s in range(2):
        members = []
        for k in range(3):
            members += [(f"{s}{k}.mkv", clip_bytes(tmp_path, 10 * k)), (f"{s}{k}.txt", b"c")]
        urls.append(write_shard(tmp_path / f"{s}.tar", members))
    source = WebDatasetClips(urls, num_frames=1, shuffle_shards=True)
    keys = sorted(r.key for i in range(2) for r in source.iter_as(current_consumer(i, 2, 0, 1)))
    assert keys == sorted(r.key for r in source)
    assert len(keys) == 6
    samples = as_media_samples(source, convert=lambda record: record)
    samples.set_epoch(3)  # the training loader calls this each epoch: the shard order follows
    assert source.epoch == 3 and samples.can_start_part_way


def test_jittered_shard_clips_draw_anew_each_epoch_and_replay_within_one(tmp_path):
    members = []
    for k in range(4):  # 12 frames each: segments [0, 4), [4, 8), [8, 12)
        members += [(f"{k}.mkv", clip_bytes(tmp_path, 0, count=12)), (f"{k}.txt", b"c")]
    shard = write_shard(tmp_path / "0.tar", members)
    assert [levels(r) for r in WebDatasetClips(shard, num_frames=3)] == [[20, 60, 100]] * 4

    def epoch(number: int) -> list[list[int]]:
        source = WebDatasetClips(shard, num_frames=3, jitter_frames=True, seed=5)
        source.set_epoch(number)
        return [levels(record) for record in source]

    draws = [epoch(number) for number in range(6)]
    for frames in (clip for clips in draws for clip in clips):
        assert [level // 40 for level in frames] == [0, 1, 2]  # one frame of each segment
    assert len({tuple(clip) for clips in draws for clip in clips}) > 6  # clips and epochs differ
    assert epoch(3) == draws[3]  # a resumed epoch reads what the first reading did


@pytest.mark.parametrize("cut_in_video", [True, False])
def test_a_cut_shard_keeps_its_whole_clips_and_counts_the_cut(tmp_path, cut_in_video):
    shard = tmp_path / "cut.tar"
    members = [("0.mkv", clip_bytes(tmp_path, 0)), ("0.txt", b"whole")]
    members += [("1.mkv", clip_bytes(tmp_path, 50)), ("1.txt", b"cut off")]
    write_shard(shard, members)
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:
        video, caption = tar.getmember("1.mkv"), tar.getmember("1.txt")
    # inside the second video, or at its caption's header: the video whole, no caption
    cut = video.offset_data + 100 if cut_in_video else caption.offset
    shard.write_bytes(data[:cut])
    records = list(WebDatasetClips(str(shard), num_frames=1))
    assert [r.segments[1] for r in records[:1]] == ["whole"]
    assert records[1:] == [SkippedRecord("corrupt", str(shard))]
