"""Drawing a scene: a noisy textured background and anti-aliased flat shapes."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from vlp.datamodules.synthetic.scene import COLOURS, SceneObject

_SUPERSAMPLE = 4  # shapes are drawn larger and shrunk, so small ones keep their outline
_COLOUR_JITTER = 12  # per channel; small enough that every colour keeps its name
# The background stays a low-saturation mid grey even at full noise, so it is
# never mistaken for white, black or any saturated object colour.
_BACKGROUND_RANGE = (60, 195)
_TEXTURE_CELLS = 6


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    corners = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        angle = -math.pi / 2 + k * math.pi / points
        corners.append((r * math.cos(angle), r * math.sin(angle)))
    return corners


def _regular(sides: int) -> list[tuple[float, float]]:
    angles = (-math.pi / 2 + 2 * math.pi * k / sides for k in range(sides))
    return [(math.cos(a), math.sin(a)) for a in angles]


def _cross(arm: float = 0.32) -> list[tuple[float, float]]:
    """A plus sign whose bars are ``2 * arm`` wide: one quarter of the outline, turned 4 times."""
    corners = [(-arm, -1.0), (arm, -1.0), (arm, -arm)]
    for _ in range(3):
        corners += [(-y, x) for x, y in corners[-3:]]
    return corners


# Outlines on the unit circle (y down); "circle" is drawn as an ellipse instead.
_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)],
    "triangle": _regular(3),
    "star": _star(),
    "cross": _cross(),
    "diamond": [(0, -1), (0.72, 0), (0, 1), (-0.72, 0)],
}


def render_scene(
    objects: list[SceneObject], image_size: int, background_noise: float, rng: np.random.Generator
) -> Image.Image:
    """The RGB image of ``objects``; ``rng`` draws the background and colour jitter."""
    image = background(rng, image_size, background_noise)
    draw_objects(image, objects, rng)
    return image


def background(rng: np.random.Generator, image_size: int, noise: float) -> Image.Image:
    """Grey with a faint tint, a smooth texture and pixel noise, both scaled by ``noise``.

    Texture and noise are mostly brightness with a little colour, so no patch
    of background looks like a saturated object colour.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"background_noise must be in [0, 1], got {noise}")
    base = rng.uniform(100, 155) + rng.uniform(-10, 10, size=3)
    cells = rng.normal(size=(_TEXTURE_CELLS, _TEXTURE_CELLS, 4)).astype(np.float32)
    texture = np.stack([_upsample(cells[..., c], image_size) for c in range(4)], axis=-1)
    pixels = rng.normal(size=(image_size, image_size, 4))
    values = (
        base
        + noise * (40.0 * texture[..., :1] + 10.0 * texture[..., 1:])
        + noise * (25.0 * pixels[..., :1] + 8.0 * pixels[..., 1:])
    )
    return Image.fromarray(np.clip(values, *_BACKGROUND_RANGE).astype(np.uint8))


def _upsample(cells: np.ndarray, image_size: int) -> np.ndarray:
    field = Image.fromarray(np.ascontiguousarray(cells))
    return np.asarray(field.resize((image_size, image_size), Image.Resampling.BICUBIC))


def draw_objects(image: Image.Image, objects: list[SceneObject], rng: np.random.Generator) -> None:
    """Paint ``objects`` onto ``image`` in place, anti-aliased by supersampling."""
    big = image.width * _SUPERSAMPLE
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for obj in objects:
        jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
        fill = tuple(int(v) for v in np.clip(np.add(COLOURS[obj.colour], jitter), 0, 255))
        cx, cy, r = obj.x * big, obj.y * big, obj.radius * big
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*fill, 255))
        else:
            points = [(cx + r * px, cy + r * py) for px, py in _OUTLINES[obj.shape]]
            draw.polygon(points, fill=(*fill, 255))
    small = layer.resize(image.size, Image.Resampling.BOX)
    image.paste(small.convert("RGB"), (0, 0), small)
