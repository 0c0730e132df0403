"""One scene from a seed: objects, image, captions, hard negatives and questions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vlp.datamodules.synthetic.captions import hard_negatives, sample_captions, write
from vlp.datamodules.synthetic.questions import make_questions
from vlp.datamodules.synthetic.render import render_scene
from vlp.datamodules.synthetic.scene import (
    COLOURS,
    MAX_OBJECTS,
    SHAPES,
    SceneObject,
    sample_objects,
)

# Independent random streams: one per split, and one per kind of derived data,
# so no two of them can ever produce the same sequence of scenes.
STREAMS = {"train": 0, "val": 1, "test": 2, "interleaved": 3, "clips": 4, "document_questions": 5}


@dataclass(frozen=True)
class SceneKnobs:
    """How hard the scenes are; the one place their defaults live."""

    image_size: int = 64
    max_objects: int = 3
    background_noise: float = 0.3  # 0: flat grey, 1: strong texture and pixel noise
    captions_per_image: int = 5

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image must be positive, got {self.captions_per_image}")
        if not 1 <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {self.max_objects}")
        if not 0.0 <= self.background_noise <= 1.0:
            raise ValueError(f"background_noise must be in [0, 1], got {self.background_noise}")


@dataclass(frozen=True)
class GeneratedScene:
    image: Image.Image
    captions: tuple[str, ...]
    label: int  # index into SHAPES of the main (first, largest) object
    meta: dict[str, Any]  # JSON-serialisable: objects, hard_negatives, questions, attributes


def generate_scene(entropy: Sequence[int], knobs: SceneKnobs) -> GeneratedScene:
    """The scene fixed by ``entropy`` (e.g. ``[seed, stream, index]``), in O(1).

    Objects, pixels, captions and questions draw from separate child streams,
    so changing one knob (say ``captions_per_image``) leaves the others' output
    unchanged, and the objects do not depend on ``image_size`` or noise.
    """
    streams = np.random.SeedSequence([int(e) for e in entropy]).spawn(4)
    object_rng, pixel_rng, caption_rng, question_rng = (np.random.default_rng(s) for s in streams)
    objects = sample_objects(object_rng, knobs.max_objects)
    image = render_scene(objects, knobs.image_size, knobs.background_noise, pixel_rng)
    specs = sample_captions(caption_rng, objects, knobs.captions_per_image)
    meta = {
        "objects": [o.to_json() for o in objects],
        "hard_negatives": [hard_negatives(caption_rng, spec, objects) for spec in specs],
        "questions": make_questions(question_rng, objects),
        "attributes": scene_attributes(objects),
    }
    captions = tuple(write(spec, objects) for spec in specs)
    return GeneratedScene(image, captions, SHAPES.index(objects[0].shape), meta)


def scene_attributes(objects: list[SceneObject]) -> dict[str, int]:
    """What else a linear probe can ask of a scene beside its label (the main object's
    shape): the main object's colour (index into ``COLOURS``) and the number of objects."""
    return {"colour": list(COLOURS).index(objects[0].colour), "count": len(objects)}
