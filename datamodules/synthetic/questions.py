"""Question/answer pairs with one-word answers, read off the scene structure."""

from __future__ import annotations

import numpy as np

from vlp.datamodules.synthetic.scene import (
    COLOURS,
    LONG_RELATION,
    NUMBER_WORDS,
    SHAPES,
    SceneObject,
    holds,
    relation,
)


def make_questions(rng: np.random.Generator, objects: list[SceneObject]) -> list[dict[str, str]]:
    """Counting, attribute, relation and existence questions about ``objects``.

    Every question names objects by attributes that are unique in the scene
    (shapes and colours never repeat), so every answer is unambiguous.
    """
    qa = [{"question": "how many objects are there?", "answer": NUMBER_WORDS[len(objects)]}]
    for obj in objects:
        qa.append({"question": f"what colour is the {obj.shape}?", "answer": obj.colour})
    target = objects[int(rng.integers(len(objects)))]
    qa.append({"question": f"what shape is the {target.colour} object?", "answer": target.shape})
    qa.append(
        {"question": f"what size is the {target.colour} {target.shape}?", "answer": target.size}
    )
    qa.extend(_relation_questions(objects))
    present = objects[int(rng.integers(len(objects)))]
    qa.append({"question": f"is there a {present.colour} {present.shape}?", "answer": "yes"})
    absent = _absent_pair(rng, objects)
    qa.append({"question": f"is there a {absent[0]} {absent[1]}?", "answer": "no"})
    return qa


def _relation_questions(objects: list[SceneObject]) -> list[dict[str, str]]:
    """ "what shape is <rel> the X?" only where exactly one object lies on that side."""
    qa = []
    for ref in objects:
        others = [o for o in objects if o is not ref]
        for other in others:
            rel = relation(other, ref)
            if sum(holds(o, rel, ref) for o in others) == 1:
                qa.append(
                    {
                        "question": f"what shape is {LONG_RELATION[rel]} the {ref.colour} {ref.shape}?",
                        "answer": other.shape,
                    }
                )
    return qa


def _absent_pair(rng: np.random.Generator, objects: list[SceneObject]) -> tuple[str, str]:
    """A colour and shape that no object has together.

    Half the time (given two objects) it is one object's colour on another's
    shape, so answering needs binding, not just spotting a colour.
    """
    if len(objects) >= 2 and rng.random() < 0.5:
        a, b = (objects[int(i)] for i in rng.choice(len(objects), 2, replace=False))
        return a.colour, b.shape
    present = {(o.colour, o.shape) for o in objects}
    while True:
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if (colour, shape) not in present:
            return colour, shape
