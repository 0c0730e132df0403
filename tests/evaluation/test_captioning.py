"""BLEU-4 and CIDEr-D on tiny corpora worked out by hand, and against coco-caption's scorers."""

from __future__ import annotations

import math
import random

import pytest

from vlp.evaluation.captioning import bleu, caption_tokens, cider_d

LN2 = math.log(2)


def test_tokens_are_lowercase_words_with_clitics_split_and_punctuation_dropped():
    assert caption_tokens("A Dog's ball, left of the box.") == [
        "a", "dog", "'s", "ball", "left", "of", "the", "box",
    ]  # fmt: skip


def test_bleu4_of_exact_ngrams_is_the_brevity_penalty_of_the_corpus():
    candidates = ["a red circle left of a blue square", "a green triangle"]
    references = [["a red circle left of a blue square"], ["a green triangle above a red star"]]
    # every n-gram matches (11, 9, 7, 5 of them); c = 8 + 3 = 11 words, r = 8 + 7 = 15
    assert bleu(candidates, references) == pytest.approx(math.exp(1 - 15 / 11), rel=1e-6)


def test_bleu_takes_the_reference_length_closest_to_the_candidate():
    candidates = ["a red circle left of a blue square", "a green triangle"]
    references = [
        ["a red circle left of a blue square"],
        ["a green triangle above a red star", "a green triangle"],
    ]
    assert bleu(candidates, references) == pytest.approx(1.0, rel=1e-6)
    # equally close references of 2 and 4 words: the shorter counts, so no penalty
    assert bleu(["one two three"], [["one two", "one two three four"]], n=1) == pytest.approx(
        1.0, rel=1e-6
    )
    assert bleu(["one two three"], [["one two three four five"]], n=1) == pytest.approx(
        math.exp(1 - 5 / 3), rel=1e-6
    )


def test_bleu_clips_repeated_words_at_their_most_frequent_reference_count():
    assert bleu(["the the the the"], [["the cat", "the the dog"]], n=1) == pytest.approx(0.5)


def test_bleu4_without_any_four_gram_match_is_smoothed_to_near_zero():
    assert bleu(["a red circle"], [["a red circle"]]) < 0.05


def test_cider_d_by_hand_with_clipping_and_the_length_penalty():
    # Two images, every n-gram in one image's references only: IDF = log(2/1) for all.
    candidates = ["red circle circle", "blue square"]
    references = [["red circle"], ["blue square"]]
    # image 1, n=1: cand (red: ln2, circle: 2·ln2), ref (ln2, ln2); clipped dot 2·ln2²
    unigrams = 2 * LN2**2 / (math.sqrt(5) * LN2 * math.sqrt(2) * LN2)
    # n=2: cand (red circle, circle circle), ref (red circle): cosine 1/√2; no 3-/4-gram in ref
    bigrams = 1 / math.sqrt(2)
    penalty = math.exp(-(1**2) / (2 * 6**2))  # 2 vs 1 bigrams
    first = 10 * (unigrams + bigrams) / 4 * penalty
    second = 10 * (1 + 1) / 4  # exact match of a 2-word caption: n = 1, 2 only
    assert cider_d(candidates, references) == pytest.approx((first + second) / 2, rel=1e-9)


def test_cider_d_averages_over_references_and_ignores_words_of_no_reference():
    candidates = ["red circle", "blue circle"]
    references = [["red circle"], ["blue square"]]
    # image 2: only "blue" matches: unigram cosine ln2² / (√2·ln2)² = 1/2
    expected = (10 * 2 / 4 + 10 * 0.5 / 4) / 2
    assert cider_d(candidates, references) == pytest.approx(expected, rel=1e-9)
    # a second, unrelated reference halves image 1's score (mean over references)
    references[0].append("green star")
    assert cider_d(candidates, references) < expected


def test_scores_match_coco_caption_on_a_random_corpus():
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    words = ["a", "the", "red", "blue", "green", "circle", "square", "star", "left", "right",
             "of", "above", "below", "big", "small"]  # fmt: skip
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))

    candidates = [sentence() for _ in range(30)]
    references = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(30)]
    references[0].append(candidates[0])  # some long matches
    references[1].append(candidates[1] + " big")
    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [c] for i, c in enumerate(candidates)}
    bleu4 = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    cider = Cider().compute_score(gts, res)[0]
    assert bleu(candidates, references) == pytest.approx(bleu4, rel=1e-9)
    assert cider_d(candidates, references) == pytest.approx(cider, rel=1e-9)
