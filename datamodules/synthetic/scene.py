"""The structured scene: which objects, where, and the relations between them.

Everything downstream (pixels, captions, hard negatives, questions) is derived
from a list of :class:`SceneObject`, so tests can check every sentence against
this structure instead of against pixels.

Positions and radii are fractions of the image side, so a scene is the same
scene at any ``image_size``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
# Saturated or extreme colours, far from the low-saturation mid-grey background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (30, 165, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 220, 35),
    "purple": (135, 40, 180),
    "orange": (250, 135, 10),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = ("small", "large")
SIZE_RADIUS = {"small": 0.09, "large": 0.16}  # circumscribed radius, fraction of the side
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
# Shapes and colours are distinct within a scene, so "the circle" or "the red
# object" always names one object; a scene must leave a shape and a colour
# unused so that a changed-shape or changed-colour hard negative is always false.
MAX_OBJECTS = 4

_EDGE_MARGIN = 0.02
_GAP = 0.04  # minimum empty space between two objects' circumscribed circles
_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; ``x``, ``y`` is its centre (y grows downwards)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    radius: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sample_objects(rng: np.random.Generator, max_objects: int) -> list[SceneObject]:
    """1..``max_objects`` objects with distinct shapes and colours that do not overlap.

    Objects are ordered large before small, so ``objects[0]`` is the main
    object whose shape is the image's class label.
    """
    count = int(rng.integers(1, max_objects + 1))
    shapes = rng.choice(len(SHAPES), size=count, replace=False)
    colours = rng.choice(len(COLOURS), size=count, replace=False)
    colour_names = list(COLOURS)
    placed: list[SceneObject] = []
    for shape, colour in zip(shapes, colours, strict=True):
        size = SIZES[int(rng.integers(len(SIZES)))]
        # A crowded scene shrinks a large object before giving up on it.
        for candidate_size in (size, "small") if size == "large" else (size,):
            obj = _place(rng, SHAPES[shape], colour_names[colour], candidate_size, placed)
            if obj is not None:
                placed.append(obj)
                break
    return sorted(placed, key=lambda o: SIZES.index(o.size), reverse=True)


def _place(
    rng: np.random.Generator, shape: str, colour: str, size: str, placed: list[SceneObject]
) -> SceneObject | None:
    radius = SIZE_RADIUS[size] * float(rng.uniform(0.95, 1.05))
    low, high = radius + _EDGE_MARGIN, 1.0 - radius - _EDGE_MARGIN
    for _ in range(_PLACEMENT_TRIES):
        x, y = (float(v) for v in rng.uniform(low, high, size=2))
        if all(np.hypot(x - o.x, y - o.y) >= radius + o.radius + _GAP for o in placed):
            return SceneObject(shape, colour, size, round(x, 4), round(y, 4), round(radius, 4))
    return None


INVERSE_RELATION = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
# The fuller wording of each relation, for sentences where the short one is terse.
LONG_RELATION = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` is relative to ``b``, along the axis where they differ most."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def holds(a: SceneObject, rel: str, b: SceneObject) -> bool:
    """Whether "a <rel> b" is true; the dominant axis picks what to say, any axis makes it true."""
    return {
        "left of": a.x < b.x,
        "right of": a.x > b.x,
        "above": a.y < b.y,
        "below": a.y > b.y,
    }[rel]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
