"""Interleaved image-text documents (MMC4/OBELICS-like) made of synthetic scenes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlp.datamodules.samples import QUESTION_ANSWER
from vlp.datamodules.synthetic.generate import STREAMS, SceneKnobs, generate_scene

_CONNECTORS = ("next,", "then,", "after that,", "and then,")


def make_interleaved_document(
    seed: int,
    index: int,
    num_scenes: int | None = None,
    knobs: SceneKnobs | None = None,
    question_fraction: float = 0.0,
    max_scenes: int = 5,
) -> list[tuple[str, Image.Image]]:
    """Document ``index``: 2 to ``max_scenes`` scenes (or ``num_scenes``), each with its text.

    Each chunk is ``(text, image)`` where the text describes that image and
    opens with a connecting phrase ("first,", "then,", "finally,"), so a
    model must attend to the right image among several to predict it. A share
    ``question_fraction`` of the chunks instead asks one of the scene's questions and
    answers it, in the VQA prompts' layout (web pages with questions and answers: a
    language model trained from scratch learns the format nowhere else). Which chunks
    and questions draw from their own stream, so documents without questions are the
    same for any ``question_fraction`` of 0.
    """
    if not 0.0 <= question_fraction <= 1.0:
        raise ValueError(f"question_fraction must be in [0, 1], got {question_fraction}")
    stream = STREAMS["interleaved"]
    rng = np.random.default_rng([seed, stream, index])
    question_rng = np.random.default_rng([seed, STREAMS["document_questions"], index])
    if max_scenes < 2:
        raise ValueError(f"max_scenes must be at least 2, got {max_scenes}")
    count = int(rng.integers(2, max_scenes + 1)) if num_scenes is None else num_scenes
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
        text = f"{connector} {scene.captions[0]}."
        if question_rng.random() < question_fraction:
            questions = scene.meta["questions"]
            text = QUESTION_ANSWER.format(**questions[int(question_rng.integers(len(questions)))])
        chunks.append((text, scene.image))
    return chunks
