"""Retrieval recall against a brute-force reading of the protocol."""

from __future__ import annotations

import pytest
import torch

from vlp.evaluation.retrieval import retrieval_recall


def brute_force(similarity, image_ids, text_image_ids, k):
    i2t = []
    for i in range(similarity.shape[0]):
        ranked = sorted(range(similarity.shape[1]), key=lambda t: -similarity[i, t].item())[:k]
        i2t.append(any(text_image_ids[t] == image_ids[i] for t in ranked))
    t2i = []
    for t in range(similarity.shape[1]):
        ranked = sorted(range(similarity.shape[0]), key=lambda i: -similarity[i, t].item())[:k]
        t2i.append(any(image_ids[i] == text_image_ids[t] for i in ranked))
    return sum(i2t) / len(i2t), sum(t2i) / len(t2i)


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_with_several_captions_per_image(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    image_ids = torch.tensor([10, 11, 12, 13, 14, 15])
    text_image_ids = torch.tensor([10, 10, 11, 12, 12, 12, 13, 14, 15, 15, 11])
    similarity = torch.randn(6, 11, generator=generator)
    metrics = retrieval_recall(similarity, image_ids, text_image_ids, ks=(1, 2, 5))
    for k in (1, 2, 5):
        i2t, t2i = brute_force(similarity, image_ids, text_image_ids, k)
        assert metrics[f"i2t_r{k}"] == pytest.approx(i2t)
        assert metrics[f"t2i_r{k}"] == pytest.approx(t2i)


def test_hand_built_case() -> None:
    # image 0's best text is a caption of image 1; its second best is its own.
    similarity = torch.tensor([[0.2, 0.9, 0.1], [0.1, 0.8, 0.3]])
    metrics = retrieval_recall(similarity, torch.tensor([0, 1]), torch.tensor([0, 1, 1]), ks=(1, 2))
    assert metrics["i2t_r1"] == 0.5 and metrics["i2t_r2"] == 1.0
    # texts: t0 → image 0 (0.2 > 0.1) ✓, t1 → image 0 (0.9 > 0.8) ✗, t2 → image 1 ✓
    assert metrics["t2i_r1"] == pytest.approx(2 / 3)


def test_exact_ties_give_the_same_recall_in_any_candidate_order() -> None:
    similarity = torch.tensor([[0.5, 0.5, 0.1, 0.0], [0.5, 0.7, 0.7, 0.3]])
    image_ids, text_image_ids = torch.tensor([0, 1]), torch.tensor([0, 1, 1, 2])
    # Ties count against the query. i2t: image 0's caption t0 ties with t1 (image 1's):
    # rank 1; image 1's two captions tie with each other, above the rest: rank 0.
    # t2i: t0's image ties with image 1: rank 1; t1 and t2: rank 0; t3's image is absent.
    expected = {"i2t_r1": 1 / 2, "i2t_r2": 1.0, "t2i_r1": 2 / 4, "t2i_r2": 3 / 4}
    for texts in ([0, 1, 2, 3], [1, 3, 2, 0], [3, 2, 1, 0]):
        for images in ([0, 1], [1, 0]):
            metrics = retrieval_recall(
                similarity[images][:, texts], image_ids[images], text_image_ids[texts], ks=(1, 2)
            )
            assert metrics == pytest.approx(expected)


def test_equal_scores_recall_nothing() -> None:
    ids = torch.arange(4)
    metrics = retrieval_recall(torch.zeros(4, 4), ids, ids, ks=(1, 3))
    assert metrics == {"i2t_r1": 0.0, "i2t_r3": 0.0, "t2i_r1": 0.0, "t2i_r3": 0.0}


def test_repeated_images_are_refused() -> None:
    with pytest.raises(ValueError, match="repeat"):
        retrieval_recall(torch.zeros(2, 2), torch.tensor([1, 1]), torch.tensor([1, 1]))
