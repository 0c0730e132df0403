"""Frames whose level is readable back, for the clip format tests."""

from __future__ import annotations

from PIL import Image

# a keyframe every 8 frames, 3 B-frames between references: decoding reorders and seeks
X264_REORDERING = {
    "x264-params": "keyint=8:min-keyint=8:bframes=3:b-adapt=0:scenecut=0",
    "crf": "10",
}


def solid(level: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, (level, 255 - level, 64))


def levels(record) -> list[int]:
    """Each frame of the record's one clip as its red level."""
    frames, _ = record.segments
    return [frame.getpixel((8, 8))[0] for frame in frames]
