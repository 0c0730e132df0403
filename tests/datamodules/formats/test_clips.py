"""Captioned clips from manifests: video files, frame folders, frame lists; bad rows counted."""

from __future__ import annotations

import json
from pathlib import Path
from random import Random

import av
import pytest

from tests.datamodules.formats.videos import X264_REORDERING, levels, solid
from vlp.datamodules.formats.clip_writers import write_video
from vlp.datamodules.formats.clips import ClipManifest
from vlp.datamodules.formats.video_frames import FrameSampling, segment_middles
from vlp.datamodules.records import BadSampleError, SkippedRecord
from vlp.datamodules.samples import Visit


def write_manifest(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_segment_middles_by_hand():
    # 10 frames in 4 parts of 2.5: middles at 1.25, 3.75, 6.25, 8.75
    assert segment_middles(10, 4) == [1, 3, 6, 8]
    assert segment_middles(4, 4) == [0, 1, 2, 3]
    assert segment_middles(2, 4) == [0, 0, 1, 1]  # a short clip repeats frames, in order
    assert segment_middles(7, 1) == [3]


def test_jittered_sampling_takes_one_frame_of_each_segment():
    # 10 frames in 4 parts: [0, 2), [2, 5), [5, 7), [7, 10)
    draws = [FrameSampling(4, Random(seed)).indices(10) for seed in range(200)]
    for segment, (low, high) in enumerate([(0, 2), (2, 5), (5, 7), (7, 10)]):
        assert {draw[segment] for draw in draws} == set(range(low, high))
    assert FrameSampling(4, Random(3)).indices(10) == FrameSampling(4, Random(3)).indices(10)
    short = {tuple(FrameSampling(4, Random(seed)).indices(2)) for seed in range(20)}
    assert short == {(0, 0, 1, 1)}  # each segment shorter than a frame: the frame it is in


def test_training_visits_jitter_frames_and_evaluation_takes_the_middles(tmp_path):
    write_video(tmp_path / "a.mkv", [solid(10 * k) for k in range(12)])
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(12):
        solid(10 * k).save(folder / f"{k}.png")
    rows = [{"video": "a.mkv", "caption": "file"}, {"video": "frames", "caption": "folder"}]
    manifest = write_manifest(tmp_path / "clips.jsonl", rows)
    source = ClipManifest(manifest, num_frames=3, jitter_frames=True)
    for index in range(2):
        assert levels(source[index]) == [20, 60, 100]  # frames 2, 6, 10: the middles
        visits = [levels(source[Visit(index, key)]) for key in range(40)]
        for frames in visits:  # segments [0, 4), [4, 8), [8, 12)
            assert [level // 40 for level in frames] == [0, 1, 2]
        assert len({tuple(frames) for frames in visits}) > 10
        assert levels(source[Visit(index, 7)]) == levels(source[Visit(index, 7)])
    fixed = ClipManifest(manifest, num_frames=3)
    assert levels(fixed[Visit(0, 7)]) == [20, 60, 100]


def test_video_files_give_the_middle_frame_of_each_segment_within_start_end(tmp_path):
    write_video(tmp_path / "a.mkv", [solid(10 * k) for k in range(12)])  # 3 s at 4 fps
    rows = [
        {"video": "a.mkv", "caption": "whole"},
        {"video": "a.mkv", "caption": "cut", "start": 1.0, "end": 2.0},  # frames 4-7
    ]
    source = ClipManifest(write_manifest(tmp_path / "clips.jsonl", rows), num_frames=2)
    assert levels(source[0]) == [30, 90]  # frames 3 and 9 of 12
    assert levels(source[1]) == [50, 70]  # frames 5 and 7 of 4..7
    assert source[1].segments[1] == "cut" and not source[1].interleaved
    assert source[1].key == f"{tmp_path / 'clips.jsonl'}:2"


def test_reordered_frames_and_seeks_past_the_first_keyframe(tmp_path):
    frames = [solid(4 * k) for k in range(40)]
    write_video(tmp_path / "b.mp4", frames, codec="libx264", options=X264_REORDERING)
    with av.open(str(tmp_path / "b.mp4")) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    assert [pts for pts, _ in packets] != sorted(pts for pts, _ in packets)  # decoding order
    assert sum(key for _, key in packets) == 5
    rows = [
        {"video": "b.mp4", "caption": "late", "start": 6.0},  # frames 24-39
        {"video": "b.mp4", "caption": "middle", "start": 3.0, "end": 6.75},  # frames 12-26
    ]
    source = ClipManifest(write_manifest(tmp_path / "c.jsonl", rows), num_frames=4)
    # solid colours survive H.264 within a few levels
    expected = [4 * (24 + i) for i in segment_middles(16, 4)]
    assert levels(source[0]) == pytest.approx(expected, abs=2)
    expected = [4 * (12 + i) for i in segment_middles(15, 4)]
    assert levels(source[1]) == pytest.approx(expected, abs=2)


def test_frame_folders_in_natural_order_and_frame_lists_in_listed_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(12):  # frame_2 sorts before frame_10
        solid(10 * k).save(folder / f"frame_{k}.png")
    (folder / "notes.txt").write_text("not a frame")
    listed = [f"frames/frame_{k}.png" for k in (11, 0, 5)]
    rows = [{"video": "frames", "caption": "folder"}, {"video": listed, "caption": "list"}]
    source = ClipManifest(write_manifest(tmp_path / "clips.jsonl", rows), num_frames=3)
    assert levels(source[0]) == [20, 60, 100]  # frames 2, 6 and 10 of 12
    assert levels(source[1]) == [110, 0, 50]


def test_each_caption_is_a_clip_and_csv_times_are_read(tmp_path):
    write_video(tmp_path / "a.mkv", [solid(10 * k) for k in range(8)])
    rows = [{"video": "a.mkv", "caption": ["one", "two", ""]}]
    source = ClipManifest(write_manifest(tmp_path / "clips.jsonl", rows), num_frames=1)
    assert len(source) == 3
    assert [source[i].segments[1] for i in range(2)] == ["one", "two"]
    assert source[2] == SkippedRecord("empty_caption", f"{tmp_path / 'clips.jsonl'}:1#2")
    csv = tmp_path / "clips.csv"
    csv.write_text("video,caption,start,end\na.mkv,cut,0.5,1.5\na.mkv,whole,,\n")
    source = ClipManifest(csv, num_frames=1)
    assert levels(source[0]) == [40]  # frames 2-5, middle 4
    assert levels(source[1]) == [40]  # frames 0-7, middle 4


def test_bad_rows_are_skipped_with_their_reason_or_raise(tmp_path):
    write_video(tmp_path / "a.mkv", [solid(10 * k) for k in range(8)])  # 2 s
    (tmp_path / "broken.mp4").write_bytes(b"<html>not a video</html>" * 20)
    (tmp_path / "frames").mkdir()
    solid(0).save(tmp_path / "frames" / "0.png")
    rows = [
        {"video": "gone.mp4", "caption": "missing"},
        {"video": "broken.mp4", "caption": "corrupt"},
        {"video": "a.mkv", "caption": "past the end", "start": 5.0},
        {"video": "a.mkv", "caption": "backwards", "start": 1.0, "end": 0.5},
        {"video": "frames", "caption": "times on frames", "end": 1.0},
        {"video": ["frames/0.png"], "caption": "times on a frame list", "start": 0.0},
        {"video": 3, "caption": "not a path"},
        {"video": "a.mkv", "caption": "bad time", "start": "soon"},
        "{not json",
        {"video": "a.mkv", "caption": "fine"},
    ]
    manifest = write_manifest(tmp_path / "clips.jsonl", rows)
    source = ClipManifest(manifest)
    reasons = [getattr(source[i], "reason", "ok") for i in range(len(source))]
    assert reasons == ["missing", "corrupt", *["bad_field"] * 6, "corrupt", "ok"]
    with pytest.raises(
        BadSampleError, match=r"clips\.jsonl:3: bad_field .*\[5\.0, None\) s of 2\.00 s"
    ):
        ClipManifest(manifest, on_error="raise")[2]
    too_large = ClipManifest(manifest, max_pixels=100)[9]  # 16x16 frames
    assert too_large == SkippedRecord("too_large", f"{manifest}:10")


def test_a_manifest_without_the_fields_fails_at_construction(tmp_path):
    manifest = write_manifest(tmp_path / "clips.jsonl", [{"path": "a.mkv", "caption": "x"}])
    with pytest.raises(ValueError, match="required video field 'video' not found"):
        ClipManifest(manifest)
    with pytest.raises(ValueError, match="num_frames"):
        ClipManifest(manifest, video_field="path", num_frames=0)
