"""Zero-shot classification from prompt embeddings."""

from __future__ import annotations

import pytest
import torch

from vlp.evaluation.zeroshot import class_embeddings, class_prompts, zeroshot_accuracy


def test_prompts_are_grouped_by_class() -> None:
    assert class_prompts(["circle", "star"], ["a {}", "one {} here"]) == [
        "a circle",
        "one circle here",
        "a star",
        "one star here",
    ]


def test_class_embedding_is_the_normalised_mean_of_normalised_prompts() -> None:
    prompts = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 1.0]])
    classes = class_embeddings(prompts, num_classes=2)
    assert torch.allclose(classes[0], torch.tensor([0.5**0.5, 0.5**0.5]))
    assert torch.allclose(classes[1], torch.tensor([0.0, 1.0]))


def test_accuracy_ignores_unlabelled_images() -> None:
    classes = torch.eye(3)
    images = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    labels = torch.tensor([0, 2, 2, -1])
    assert zeroshot_accuracy(images, classes, labels) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        zeroshot_accuracy(images, classes, torch.full((4,), -1))
