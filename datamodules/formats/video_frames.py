"""The frames of one clip, from a video file or a folder of frame images.

A clip becomes ``num_frames`` frames, one from each of ``num_frames`` equal
segments: its middle frame (TSN's test-time sampling), or with a random generator a
random frame of it (TSN's training sampling). A clip with fewer frames than
``num_frames`` repeats some, in order.

Video files are read with PyAV (FFmpeg bundled in its wheels). Frames are chosen
from the timestamps of the packets between ``start`` and ``end`` first, without
decoding, then decoded from the keyframe before the first chosen one; only the
chosen frames are kept.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import av
from PIL import Image

from vlp.datamodules.formats.decode import decode_image
from vlp.datamodules.media_text import Medium
from vlp.datamodules.records import BadSampleError

FRAME_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def segment_middles(count: int, num_frames: int) -> list[int]:
    """Index of the middle frame of each of ``num_frames`` equal parts of ``count`` frames."""
    return [int((k + 0.5) * count / num_frames) for k in range(num_frames)]


@dataclass(frozen=True)
class FrameSampling:
    """Which ``num_frames`` frames of a clip: the segments' middles, or with ``rng`` a
    random frame of each segment."""

    num_frames: int
    rng: random.Random | None = None

    def indices(self, count: int) -> list[int]:
        if self.rng is None:
            return segment_middles(count, self.num_frames)
        bounds = [int(k * count / self.num_frames) for k in range(self.num_frames + 1)]
        # a segment shorter than a frame (count < num_frames) takes the frame it starts in
        return [self.rng.randrange(low, max(low + 1, high)) for low, high in pairwise(bounds)]


def folder_frames(folder: Path) -> list[Path]:
    """The image files of ``folder`` in natural order (``frame_2`` before ``frame_10``)."""

    def natural(path: Path) -> list[int | str]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

    images = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
    return sorted(images, key=natural)


def read_image_frames(
    paths: list[Path], sampling: FrameSampling, key: str, max_pixels: int
) -> Medium:
    """The sampled frames of the frame images ``paths`` (in clip order), decoded."""
    if not paths:
        raise BadSampleError("missing", key, "no frame images")
    chosen = sampling.indices(len(paths))
    return tuple(decode_image(paths[i], key, max_pixels) for i in chosen)


def read_video_frames(
    video: Path | bytes,
    sampling: FrameSampling,
    key: str,
    max_pixels: int,
    start: float | None = None,
    end: float | None = None,
) -> Medium:
    """The sampled frames of the first video stream of a video file (a path, or its
    bytes), within ``[start, end)`` seconds when given, as RGB images."""
    if isinstance(video, Path) and not video.is_file():
        raise BadSampleError("missing", key, f"no file at {video}")
    try:
        with av.open(io.BytesIO(video) if isinstance(video, bytes) else str(video)) as container:
            if not container.streams.video:
                raise BadSampleError("corrupt", key, "no video stream")
            stream = container.streams.video[0]
            if stream.width * stream.height > max_pixels:
                detail = f"{stream.width}x{stream.height} > max_pixels={max_pixels}"
                raise BadSampleError("too_large", key, detail)
            wanted, intra_only = _chosen_timestamps(container, stream, sampling, key, start, end)
            decoded = _decode_at(container, stream, set(wanted), intra_only)
    except BadSampleError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise BadSampleError("corrupt", key, f"{type(error).__name__}: {error}") from error
    lost = sorted(set(wanted) - set(decoded))
    if lost:
        raise BadSampleError("corrupt", key, f"{len(lost)} chosen frames did not decode")
    return tuple(decoded[pts] for pts in wanted)


def _chosen_timestamps(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    sampling: FrameSampling,
    key: str,
    start: float | None,
    end: float | None,
) -> tuple[list[int], bool]:
    """Presentation timestamps (in ``stream.time_base``) of the frames to keep, and
    whether every packet read was a keyframe (an intra-only codec: FFV1, MJPEG, ...).

    Times count from the stream's first frame. Only the packets from the keyframe at or
    before ``start`` up to ``end`` are read, so a short clip of a long video costs little.
    """
    seconds = float(stream.time_base)
    origin = stream.start_time or 0
    if start is not None:
        container.seek(origin + int(start / seconds), stream=stream)
    stamps: set[int] = set()
    intra_only = True
    for packet in container.demux(stream):  # in decoding order
        if end is not None and packet.dts is not None and (packet.dts - origin) * seconds >= end:
            break  # a frame is shown at or after it is decoded: no later packet is inside
        if packet.pts is not None and packet.size:
            stamps.add(packet.pts)
            intra_only &= packet.is_keyframe
    lower = -float("inf") if start is None else start
    upper = float("inf") if end is None else end
    window = sorted(pts for pts in stamps if lower <= (pts - origin) * seconds < upper)
    if not window:
        if start is None and end is None:
            raise BadSampleError("corrupt", key, "no timestamped video frame")
        length = f"{container.duration / av.time_base:.2f}" if container.duration else "?"
        raise BadSampleError("bad_field", key, f"no frame in [{start}, {end}) s of {length} s")
    return [window[i] for i in sampling.indices(len(window))], intra_only


def _decode_at(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    wanted: set[int],
    intra_only: bool,
) -> dict[int, Image.Image]:
    """The frames whose timestamps are in ``wanted``, decoded from the keyframe at or
    before the earliest; decoding stops after the latest. In an intra-only stream each
    frame decodes on its own, so only the wanted packets are decoded."""
    container.seek(min(wanted), stream=stream)  # backward: to the keyframe at or before
    last = max(wanted)
    frames = {}
    if intra_only:
        for packet in container.demux(stream):
            if packet.pts in wanted:
                frames.update((f.pts, f.to_image()) for f in stream.decode(packet))
            if packet.pts is not None and packet.pts >= last:
                break
        frames.update((f.pts, f.to_image()) for f in stream.decode(None))  # held frames
        return frames
    for frame in container.decode(stream):  # in presentation order
        if frame.pts in wanted:
            frames[frame.pts] = frame.to_image()
        if frame.pts is not None and frame.pts >= last:
            break
    return frames
