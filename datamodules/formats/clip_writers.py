"""Write clips as the video files and shards that the clip readers take, so clips can
be exported, a benchmark can lay them out per codec, and every reader can be tested
against a copy whose frames are known.

The default codec, FFV1 in RGB, is lossless: frames read back are the frames written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import webdataset
from PIL import Image

from vlp.datamodules.formats.clip_shards import WebDatasetClips
from vlp.datamodules.formats.clips import ClipManifest
from vlp.datamodules.media_text import MediaTextRecord, clip_of

VIDEO_CODECS = {  # codec: (file suffix, pixel format)
    "ffv1": ("mkv", "bgr0"),  # lossless
    "libx264": ("mp4", "yuv420p"),  # H.264: keyframes apart, frames reordered (B-frames)
    "mjpeg": ("avi", "yuvj420p"),  # every frame a keyframe
}
CLIP_FORMATS = ("jsonl", "webdataset")


def write_video(
    path: str | os.PathLike,
    frames: Sequence[Image.Image],
    fps: int = 4,
    codec: str = "ffv1",
    options: dict[str, str] | None = None,
) -> Path:
    """``frames`` as one video at ``fps``; ``options`` go to the encoder (e.g. x264's)."""
    _check_codec(codec)
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = VIDEO_CODECS[codec][1]
        stream.options = dict(options or {})
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))))
        container.mux(stream.encode())  # flush the frames the encoder still holds
    return path


def write_clips(
    records: Iterable[MediaTextRecord],
    out_dir: str | os.PathLike,
    fmt: str,
    codec: str = "ffv1",
    fps: int = 4,
    shard_size: int = 1000,
) -> Path:
    """Write one-clip records (frames, caption) under ``out_dir``; return the path that
    ``open_written_clips`` takes.

    ``jsonl``: a video file per clip (``shard_size`` per sub-folder) and ``clips.jsonl``;
    ``webdataset``: video2dataset's shard layout, ``{key}.<video>`` with ``{key}.txt``.
    """
    if fmt not in CLIP_FORMATS:
        raise ValueError(f"unknown clip format {fmt!r}; choose from {CLIP_FORMATS}")
    _check_codec(codec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = map(clip_of, records)
    if fmt == "jsonl":
        return _write_manifest(clips, out, codec, fps, shard_size)
    return _write_shards(clips, out, codec, fps, shard_size)


def open_written_clips(
    path: str | os.PathLike, fmt: str, **kwargs: Any
) -> ClipManifest | WebDatasetClips:
    """The source that reads what ``write_clips(..., fmt)`` wrote to ``path``."""
    if fmt == "jsonl":
        return ClipManifest(path, **kwargs)
    if fmt == "webdataset":
        return WebDatasetClips(str(path), **kwargs)
    raise ValueError(f"unknown clip format {fmt!r}; choose from {CLIP_FORMATS}")


def _write_manifest(
    clips: Iterator[tuple[Sequence[Image.Image], str]],
    out: Path,
    codec: str,
    fps: int,
    shard_size: int,
) -> Path:
    path = out / "clips.jsonl"
    suffix = VIDEO_CODECS[codec][0]
    with open(path, "w", encoding="utf-8") as manifest:
        for index, (frames, caption) in enumerate(clips):
            relative = f"videos/{index // shard_size:05d}/{index:09d}.{suffix}"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            write_video(out / relative, frames, fps, codec)
            row = {"video": relative, "caption": caption}
            manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _write_shards(
    clips: Iterator[tuple[Sequence[Image.Image], str]],
    out: Path,
    codec: str,
    fps: int,
    shard_size: int,
) -> Path:
    suffix = VIDEO_CODECS[codec][0]
    scratch = out / f".clip.{suffix}"  # PyAV writes to a file; its bytes go in the shard
    with webdataset.ShardWriter(
        str(out / "shard-%06d.tar"), maxcount=shard_size, verbose=0, encoder=False, mtime=0
    ) as sink:
        for index, (frames, caption) in enumerate(clips):
            video = write_video(scratch, frames, fps, codec).read_bytes()
            sink.write({"__key__": f"{index:09d}", suffix: video, "txt": caption.encode()})
        n_shards = sink.shard
    scratch.unlink(missing_ok=True)
    return out / f"shard-{{000000..{n_shards - 1:06d}}}.tar"


def _check_codec(codec: str) -> None:
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(VIDEO_CODECS)}")
