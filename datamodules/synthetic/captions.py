"""Captions, their hard negatives and the zero-shot prompts, all from one set of templates.

A caption is first chosen as a :class:`CaptionSpec` (template, which objects
it mentions with which attributes, which relation it states) and only then
written out. A hard negative is the same spec written out for a perturbed
scene (colours swapped, one shape or size changed) or with the relation
inverted, so it differs from the true caption in exactly one binding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vlp.datamodules.synthetic.scene import (
    COLOURS,
    INVERSE_RELATION,
    LONG_RELATION,
    NUMBER_WORDS,
    SHAPES,
    SIZES,
    SceneObject,
    article,
    relation,
)

CLASS_NAMES = SHAPES
# Worded like the single-object captions below, so a model that has only seen
# captions still reads them as descriptions of one object.
PROMPT_TEMPLATES = ("a {}", "a picture of a {}", "there is a {} in the image")

_SINGLE = {
    "bare": "{0}",
    "picture": "a picture of {0}",
    "there_is": "there is {0} in the image",
    "one_object": "a picture with one object: {0}",
}
_RELATION = {
    "rel_short": "{0} {rel} {1}",
    "rel_there": "there is {0} {rel_long} {1}",
    "rel_is": "{0} is {rel_long} {1}",
}
_LIST = {"list": "{list}", "count": "a picture with {count} objects: {list}"}
_RELATION_AND_REST = {"rel_and_rest": "{0} {rel} {1}, and {rest}"}
_SHOW_COLOUR = 0.85  # shape-only mentions are rarer: they carry less to bind
_SHOW_SIZE = 0.4


@dataclass(frozen=True)
class Mention:
    """One object named in a caption, and which of its attributes are said."""

    index: int  # into the scene's objects
    show_size: bool
    show_colour: bool


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says, apart from the words: perturbing it gives hard negatives."""

    template: str
    mentions: tuple[Mention, ...]
    relation: str | None = None  # where mentions[0] is relative to mentions[1]


def _templates_for(count: int) -> dict[str, str]:
    if count == 1:
        return _SINGLE
    extra = _RELATION_AND_REST if count >= 3 else {}
    return {**_RELATION, **_LIST, **extra}


def sample_spec(rng: np.random.Generator, objects: list[SceneObject]) -> CaptionSpec:
    templates = _templates_for(len(objects))
    template = list(templates)[int(rng.integers(len(templates)))]
    order = [int(i) for i in rng.permutation(len(objects))]
    if template in _SINGLE:
        order = [0]
    mentions = tuple(
        Mention(i, bool(rng.random() < _SHOW_SIZE), bool(rng.random() < _SHOW_COLOUR))
        for i in order
    )
    if template in _RELATION:
        mentions = mentions[:2]
    rel = None
    if template in _RELATION or template in _RELATION_AND_REST:
        rel = relation(objects[mentions[0].index], objects[mentions[1].index])
    return CaptionSpec(template, mentions, rel)


def sample_captions(
    rng: np.random.Generator, objects: list[SceneObject], count: int
) -> list[CaptionSpec]:
    """``count`` specs whose texts differ where the scene allows that many wordings."""
    specs: dict[str, CaptionSpec] = {}
    for _ in range(20 * count):
        if len(specs) == count:
            break
        spec = sample_spec(rng, objects)
        specs.setdefault(write(spec, objects), spec)
    distinct = list(specs.values())
    return [distinct[i % len(distinct)] for i in range(count)]


def _phrase(mention: Mention, obj: SceneObject) -> str:
    words = [obj.size] * mention.show_size + [obj.colour] * mention.show_colour + [obj.shape]
    return f"{article(words[0])} {' '.join(words)}"


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def write(spec: CaptionSpec, objects: list[SceneObject]) -> str:
    """The caption text of ``spec`` for ``objects`` (lower-case, no final full stop)."""
    phrases = [_phrase(m, objects[m.index]) for m in spec.mentions]
    templates = {**_SINGLE, **_RELATION, **_LIST, **_RELATION_AND_REST}
    return templates[spec.template].format(
        *phrases,
        rel=spec.relation,
        rel_long=LONG_RELATION.get(spec.relation or ""),
        list=_join(phrases),
        rest=_join(phrases[2:]),
        count=NUMBER_WORDS[len(phrases)],
    )


def hard_negatives(
    rng: np.random.Generator, spec: CaptionSpec, objects: list[SceneObject]
) -> list[dict[str, str]]:
    """False captions, each one binding away from ``spec``: ``{"kind", "text"}``.

    Shapes and colours are distinct within a scene and the replacements are
    unused ones, so every mention that is changed names no object at all.
    """
    negatives = []
    coloured = [m.index for m in spec.mentions if m.show_colour]
    if len(coloured) >= 2:
        pair = coloured[:2] if spec.relation else rng.choice(coloured, 2, replace=False)
        a, b = (int(i) for i in pair)
        swapped = list(objects)
        swapped[a] = replace(objects[a], colour=objects[b].colour)
        swapped[b] = replace(objects[b], colour=objects[a].colour)
        negatives.append({"kind": "colour_swap", "text": write(spec, swapped)})
    elif coloured:
        unused = [c for c in COLOURS if c not in {o.colour for o in objects}]
        new_colour = unused[int(rng.integers(len(unused)))]
        negatives.append(
            {
                "kind": "colour_change",
                "text": _write_changed(spec, objects, coloured[0], colour=new_colour),
            }
        )
    if spec.relation is not None:
        flipped = replace(spec, relation=INVERSE_RELATION[spec.relation])
        negatives.append({"kind": "relation_swap", "text": write(flipped, objects)})
    target = spec.mentions[int(rng.integers(len(spec.mentions)))].index
    unused_shapes = [s for s in SHAPES if s not in {o.shape for o in objects}]
    new_shape = unused_shapes[int(rng.integers(len(unused_shapes)))]
    negatives.append(
        {"kind": "shape_change", "text": _write_changed(spec, objects, target, shape=new_shape)}
    )
    sized = [m.index for m in spec.mentions if m.show_size]
    if sized:
        target = sized[int(rng.integers(len(sized)))]
        other_size = SIZES[1 - SIZES.index(objects[target].size)]
        negatives.append(
            {"kind": "size_change", "text": _write_changed(spec, objects, target, size=other_size)}
        )
    return negatives


def _write_changed(spec: CaptionSpec, objects: list[SceneObject], index: int, **change: str) -> str:
    changed = list(objects)
    changed[index] = replace(objects[index], **change)
    return write(spec, changed)
