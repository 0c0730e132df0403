"""Zero-shot classification: the class whose prompt embedding is closest wins (CLIP §3.1.4)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def class_prompts(class_names: list[str], templates: list[str]) -> list[str]:
    """Every template filled with every class, grouped by class."""
    return [template.format(name) for name in class_names for template in templates]


def class_embeddings(prompt_embeddings: Tensor, num_classes: int) -> Tensor:
    """Average each class's normalised prompt embeddings, then renormalise (prompt ensembling)."""
    grouped = F.normalize(prompt_embeddings, dim=-1).view(
        num_classes, -1, prompt_embeddings.shape[-1]
    )
    return F.normalize(grouped.mean(1), dim=-1)


def zeroshot_accuracy(image_embeddings: Tensor, classes: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy over images that have a label (label ≥ 0)."""
    known = labels >= 0
    if not known.any():
        raise ValueError("zero-shot accuracy needs labelled images")
    predicted = (image_embeddings[known] @ classes.T).argmax(-1)
    return (predicted == labels[known]).float().mean().item()
