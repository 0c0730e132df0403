"""Short synthetic "videos": one object moving across a fixed background."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vlp.datamodules.synthetic.generate import STREAMS
from vlp.datamodules.synthetic.render import background, draw_objects
from vlp.datamodules.synthetic.scene import (
    COLOURS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    SceneObject,
    article,
)

# Unit steps in image coordinates (y grows downwards).
DIRECTIONS = {"to the right": (1, 0), "to the left": (-1, 0), "up": (0, -1), "down": (0, 1)}
_MARGIN = 0.03


@dataclass(frozen=True)
class Clip:
    frames: list[Image.Image]
    caption: str  # e.g. "a red circle moving to the right"
    meta: dict[str, Any]  # JSON-serialisable: the object per frame and the direction


def make_clip(
    seed: int, index: int, num_frames: int = 4, image_size: int = 64, background_noise: float = 0.3
) -> Clip:
    """Clip ``index``: one object crossing most of the frame along one axis.

    Only the position changes between frames (same background, same colour
    jitter), so the direction can be read only from the order of the frames.
    """
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {num_frames}")
    rng = np.random.default_rng([seed, STREAMS["clips"], index])
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    size = SIZES[int(rng.integers(len(SIZES)))]
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    radius = SIZE_RADIUS[size]
    low, high = radius + _MARGIN, 1.0 - radius - _MARGIN
    start, end = (low, high) if sum(DIRECTIONS[direction]) > 0 else (high, low)
    across = float(rng.uniform(low, high))
    backdrop = background(rng, image_size, background_noise)
    jitter_seed = int(rng.integers(2**32))
    frames, objects = [], []
    for t in np.linspace(start, end, num_frames):
        x, y = (float(t), across) if DIRECTIONS[direction][0] else (across, float(t))
        obj = SceneObject(shape, colour, size, round(x, 4), round(y, 4), radius)
        frame = backdrop.copy()
        draw_objects(frame, [obj], np.random.default_rng(jitter_seed))
        frames.append(frame)
        objects.append(obj.to_json())
    caption = f"{article(colour)} {colour} {shape} moving {direction}"
    return Clip(frames, caption, {"objects": objects, "direction": direction})
