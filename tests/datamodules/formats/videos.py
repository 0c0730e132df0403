"""Small videos written with PyAV, for the clip format tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

B_FRAMES = "bframes=3:b-adapt=0:scenecut=0"


def solid(level: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, (level, 255 - level, 64))


def write_video(path: Path, frames: list[Image.Image], fps: int = 4, codec: str = "ffv1") -> Path:
    """``ffv1`` in RGB (``bgr0``) is lossless; ``libx264`` reorders frames (B-frames)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if codec == "libx264":
            # a keyframe every 8 frames, 3 B-frames between references
            stream.options = {"x264-params": f"keyint=8:min-keyint=8:{B_FRAMES}", "crf": "10"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return path


def levels(record) -> list[int]:
    """Each frame of the record's one clip as its red level."""
    frames, _ = record.segments
    return [frame.getpixel((8, 8))[0] for frame in frames]
