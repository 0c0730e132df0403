"""VQA accuracy: exact match after the VQA benchmark's answer normalisation.

The normalisation follows the official VQA evaluation script (Antol et al. 2015):
lowercase; punctuation removed (a comma between digits dropped, other marks turned
into spaces unless they touch a space); periods dropped unless followed by a digit;
number words up to ten written as digits; the articles a/an/the removed. Its table of
contractions ("dont" → "don't") is left out. Unlike the official script, which trusts
the annotators' answers to be normalised already, both sides are normalised here.

With one reference answer per question (the synthetic scenes), the benchmark's
min(#annotators agreeing / 3, 1) is plain exact match; with several, a prediction
counts when it matches any of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# The prompts' own markers, matched as written: "short" and "shorts" are answers too.
_ANSWER_ENDS = re.compile(r"Question:|Short answer:|Answer:|, ")


def normalize_answer(answer: str) -> str:
    """``"Two dogs."`` → ``"2 dogs"``; ``"the 1,000"`` → ``"1000"``."""
    original = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = original
    for mark in _PUNCTUATION:
        touches_space = f"{mark} " in original or f" {mark}" in original
        if touches_space or _COMMA_IN_NUMBER.search(original):
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _PERIOD.sub("", text)
    words = (_NUMBERS.get(word, word) for word in text.split())
    return " ".join(word for word in words if word not in _ARTICLES)


def answer_from_generation(text: str) -> str:
    """The answer part of a generated continuation: the text before the model starts a
    new "Question:"/"Short answer:"/"Answer:" or a second clause (OpenFlamingo's
    post-processing, which splits case-sensitively, cut only at whole markers)."""
    return _ANSWER_ENDS.split(text, maxsplit=1)[0].strip()


def vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Fraction of predictions equal, once normalised, to one of their reference answers."""
    if not predictions:
        raise ValueError("no predictions to score")
    hits = sum(
        normalize_answer(prediction) in {normalize_answer(a) for a in refs}
        for prediction, refs in zip(predictions, answers, strict=True)
    )
    return hits / len(predictions)
