"""Interleaved image-text documents (MMC4/OBELICS-like) made of synthetic scenes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlp.datamodules.synthetic.generate import STREAMS, SceneKnobs, generate_scene

_CONNECTORS = ("next,", "then,", "after that,", "and then,")


def make_interleaved_document(
    seed: int, index: int, num_scenes: int | None = None, knobs: SceneKnobs | None = None
) -> list[tuple[str, Image.Image]]:
    """Document ``index``: 2–5 scenes (or ``num_scenes``), each with the text about it.

    Each chunk is ``(text, image)`` where the text describes that image and
    opens with a connecting phrase ("first,", "then,", "finally,"), so a
    model must attend to the right image among several to predict it.
    """
    stream = STREAMS["interleaved"]
    rng = np.random.default_rng([seed, stream, index])
    count = int(rng.integers(2, 6)) if num_scenes is None else num_scenes
    if count < 1:
        raise ValueError(f"num_scenes must be positive, got {count}")
    knobs = knobs or SceneKnobs(captions_per_image=1)
    chunks = []
    for position in range(count):
        scene = generate_scene([seed, stream, index, position], knobs)
        if position == 0:
            connector = "first,"
        elif position == count - 1:
            connector = "finally,"
        else:
            connector = _CONNECTORS[int(rng.integers(len(_CONNECTORS)))]
        chunks.append((f"{connector} {scene.captions[0]}.", scene.image))
    return chunks
