"""VQA answer normalisation (the official script's rules) and exact-match accuracy."""

from __future__ import annotations

import pytest

from vlp.evaluation.vqa import answer_from_generation, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("answer", "normalized"),
    [
        ("Red", "red"),
        ("  Two\n", "2"),
        ("the cat", "cat"),
        ("an apple a day", "apple day"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("yes.", "yes"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # a comma inside a number is dropped
        ("red,blue", "red blue"),  # a mark between words becomes a space
        ("red, blue", "red blue"),  # a mark next to a space is dropped
        ("left-of", "left of"),
        ("(circle)!", "circle"),
    ],
)
def test_normalize_answer(answer: str, normalized: str):
    assert normalize_answer(answer) == normalized


def test_accuracy_is_exact_match_after_normalisation_against_any_reference():
    predictions = ["Two", "the red one", "square", "blue"]
    answers = [["2"], ["red"], ["circle", "square"], ["green"]]
    # "the red one" → "red 1" ≠ "red": normalisation does not strip extra words
    assert vqa_accuracy(predictions, answers) == pytest.approx(2 / 4)


def test_accuracy_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no predictions"):
        vqa_accuracy([], [])


@pytest.mark.parametrize(
    ("generated", "answer"),
    [
        ("red", "red"),
        ("red Question: what shape", "red"),
        ("blue Short answer: red", "blue"),
        ("two, and more", "two"),
        (" circle Answer: square", "circle"),
        # words that only resemble a marker are answers
        (" shorts", "shorts"),
        (" Short", "Short"),
        ("short sleeves Question: what", "short sleeves"),
        (" the answer is yes", "the answer is yes"),
        (" questions", "questions"),
    ],
)
def test_answer_is_the_text_before_the_next_prompt_or_clause(generated: str, answer: str):
    assert answer_from_generation(generated) == answer
