"""Captions, hard negatives and questions checked against the scene structure.

The checker below reads the text back with its own regular expressions and
evaluates it against ``meta["objects"]``; it shares no code with the
generator, so a wrongly worded template or relation is caught.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from vlp.datamodules.synthetic import (
    CLASS_NAMES,
    COLOURS,
    PROMPT_TEMPLATES,
    SHAPES,
    SyntheticScenes,
)

Objects = list[dict[str, Any]]

_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_MENTION = re.compile(rf"\ban? (?:(small|large) )?(?:({_COLOUR}) )?({_SHAPE})\b")
_RELATION = re.compile(r"\b(left|right|above|below)\b")
_COUNT = re.compile(r"\b(one|two|three|four) objects?\b")
_ARTICLES = {"a", "an"}
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}


def _find(objects: Objects, size: str | None, colour: str | None, shape: str) -> list[dict]:
    return [
        o
        for o in objects
        if o["shape"] == shape and size in (None, o["size"]) and colour in (None, o["colour"])
    ]


def _side(a: dict, word: str, b: dict) -> bool:
    return {
        "left": a["x"] < b["x"],
        "right": a["x"] > b["x"],
        "above": a["y"] < b["y"],
        "below": a["y"] > b["y"],
    }[word]


def _dominant(a: dict, word: str, b: dict) -> bool:
    horizontal = abs(a["x"] - b["x"]) >= abs(a["y"] - b["y"])
    return horizontal == (word in ("left", "right"))


def check(caption: str, objects: Objects) -> list[str]:
    """Everything ``caption`` says that is false of ``objects``; empty if it is true."""
    problems = []
    count = _COUNT.search(caption)
    if count and _NUMBERS[count.group(1)] != len(objects):
        problems.append(f"count {count.group(1)}")
    for clause in re.split(r",|:| and ", caption):
        mentions = list(_MENTION.finditer(clause))
        found = [_find(objects, *m.groups()) for m in mentions]
        problems += [f"no {m.group(0)!r}" for m, f in zip(mentions, found, strict=True) if not f]
        relations = _RELATION.findall(clause)
        assert len(relations) <= 1 and len(mentions) <= 2, clause
        if relations and all(found):
            assert len(mentions) == 2, clause
            (a,), (b,) = found
            if not _side(a, relations[0], b):
                problems.append(f"not {relations[0]}")
    return problems


def _records(**knobs: Any) -> list:
    return list(SyntheticScenes(num_images=250, **knobs))


@pytest.fixture(scope="module")
def records() -> list:
    return _records() + _records(max_objects=4, seed=1)


def test_every_caption_is_true_and_names_relations_on_their_dominant_axis(records) -> None:
    mentions_all_of_three = 0
    for record in records:
        objects = record.meta["objects"]
        for caption in record.captions:
            assert caption == caption.lower() and caption.strip() == caption
            assert check(caption, objects) == [], (caption, objects)
            mentions = list(_MENTION.finditer(caption))
            assert mentions, caption
            named = [_find(objects, *m.groups())[0]["shape"] for m in mentions]
            assert len(set(named)) == len(named), caption
            mentions_all_of_three += len(objects) == 3 and len(named) == 3
            words = _RELATION.findall(caption)
            if words:
                a, b = (_find(objects, *m.groups())[0] for m in mentions[:2])
                assert _dominant(a, words[0], b), (caption, objects)
    assert mentions_all_of_three > 0


def test_hard_negatives_are_false_and_differ_from_every_true_caption(records) -> None:
    kinds = set()
    for record in records:
        negatives = record.meta["hard_negatives"]
        assert len(negatives) == len(record.captions)
        for caption, caption_negatives in zip(record.captions, negatives, strict=True):
            assert caption_negatives, caption
            for negative in caption_negatives:
                kinds.add(negative["kind"])
                assert negative["text"] not in record.captions
                assert check(negative["text"], record.meta["objects"]) != [], (
                    caption,
                    negative,
                    record.meta["objects"],
                )
                assert _one_binding_apart(caption, negative), (caption, negative)
    assert kinds == {"colour_swap", "colour_change", "relation_swap", "shape_change", "size_change"}


def _one_binding_apart(caption: str, negative: dict[str, str]) -> bool:
    """Whether the negative is the caption with only its kind of change made."""
    words, changed = caption.split(), negative["text"].split()
    if negative["kind"] == "colour_swap":
        return sorted(w for w in words if w not in _ARTICLES) == sorted(
            w for w in changed if w not in _ARTICLES
        )
    if negative["kind"] == "relation_swap":
        return set(words) ^ set(changed) <= {"left", "right", "above", "below"}
    # One attribute word replaced, plus its article where "a"/"an" must follow it.
    differing = [(w, c) for w, c in zip(words, changed, strict=True) if w != c]
    return len(differing) == 1 or (len(differing) == 2 and set(differing[0]) == _ARTICLES)


def test_single_object_scenes_get_colour_or_shape_negatives_only(records) -> None:
    for record in records:
        if len(record.meta["objects"]) == 1:
            for negatives in record.meta["hard_negatives"]:
                assert {n["kind"] for n in negatives} <= {
                    "colour_change",
                    "shape_change",
                    "size_change",
                }


_QUESTIONS = [
    (re.compile(r"how many objects are there\?"), lambda objs: _word(len(objs))),
    (
        re.compile(rf"what colour is the ({_SHAPE})\?"),
        lambda objs, shape: _only(_find(objs, None, None, shape))["colour"],
    ),
    (
        re.compile(rf"what shape is the ({_COLOUR}) object\?"),
        lambda objs, colour: _only([o for o in objs if o["colour"] == colour])["shape"],
    ),
    (
        re.compile(rf"what size is the ({_COLOUR}) ({_SHAPE})\?"),
        lambda objs, colour, shape: _only(_find(objs, None, colour, shape))["size"],
    ),
    (
        re.compile(
            rf"what shape is (?:to the )?(left|right|above|below)(?: of)? the ({_COLOUR}) ({_SHAPE})\?"
        ),
        lambda objs, word, colour, shape: _only(
            [o for o in objs if _side(o, word, _only(_find(objs, None, colour, shape)))]
        )["shape"],
    ),
    (
        re.compile(rf"is there an? ({_COLOUR}) ({_SHAPE})\?"),
        lambda objs, colour, shape: "yes" if _find(objs, None, colour, shape) else "no",
    ),
]


def _word(number: int) -> str:
    return {v: k for k, v in _NUMBERS.items()}[number]


def _only(found: list[dict]) -> dict:
    assert len(found) == 1, found
    return found[0]


def test_question_answers_follow_from_the_objects(records) -> None:
    answers = set()
    for record in records:
        objects = record.meta["objects"]
        for qa in record.meta["questions"]:
            assert len(qa["answer"].split()) == 1
            matches = [(pattern.fullmatch(qa["question"]), f) for pattern, f in _QUESTIONS]
            (match, answer), *_ = [(m, f) for m, f in matches if m] or [(None, None)]
            assert match is not None, qa["question"]
            assert answer(objects, *match.groups()) == qa["answer"], (qa, objects)
            answers.add(qa["answer"])
    assert {"yes", "no", "one", "two", "three"} <= answers


def test_zero_shot_prompts_are_worded_like_real_captions(records) -> None:
    assert CLASS_NAMES == SHAPES
    captions = {c for record in records for c in record.captions}
    for template in PROMPT_TEMPLATES:
        assert any(template.format(name) in captions for name in CLASS_NAMES), template
