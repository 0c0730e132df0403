"""SigLIP against its pairwise sigmoid loss computed by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from tests.objectives.test_contrastive import step_with, with_identity_projections
from vlp.objectives.sigmoid import SigmoidContrastive

V = [[1.0, 0.2, -0.3], [0.1, 1.0, 0.4], [-0.5, 0.3, 1.0], [0.7, -0.7, 0.1]]
W = [[0.9, 0.1, 0.0], [0.3, 0.8, 0.1], [-0.2, 0.2, 0.9], [0.1, 0.1, -1.0]]


def identity_siglip(dim: int, **kwargs) -> SigmoidContrastive:
    return with_identity_projections(SigmoidContrastive(embed_dim=dim, **kwargs))


def hand_sigmoid(v: list[list[float]], w: list[list[float]], t: float, b: float,
                 positive: list[list[bool]]) -> float:  # fmt: skip
    """−1/|B| Σ_i Σ_j log σ(z_ij (t⟨x_i, y_j⟩ + b)) with loops (SigLIP eq. 1)."""

    def norm(x):
        n = math.sqrt(sum(a * a for a in x))
        return [a / n for a in x]

    v, w = [norm(x) for x in v], [norm(x) for x in w]
    total = 0.0
    for i, x in enumerate(v):
        for j, y in enumerate(w):
            z = 1.0 if positive[i][j] else -1.0
            logit = t * sum(a * c for a, c in zip(x, y, strict=True)) + b
            total += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    return total / len(v)


def test_loss_matches_hand_computed_sigmoid_loss() -> None:
    siglip = identity_siglip(3, scale=5.0, bias=-2.0)
    terms = siglip(step_with(torch.tensor(V), torch.tensor(W), [0, 1, 2, 3]))
    diagonal = [[i == j for j in range(4)] for i in range(4)]
    expected = hand_sigmoid(V, W, 5.0, -2.0, diagonal)
    assert terms["sigmoid_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["scale"].item() == pytest.approx(5.0) and terms["bias"].item() == -2.0


def test_captions_of_one_image_are_positive_pairs() -> None:
    ids = [7, 7, 9, 4]
    same = [[a == b for b in ids] for a in ids]
    with_ids = identity_siglip(3)(step_with(torch.tensor(V), torch.tensor(W), ids))
    assert with_ids["sigmoid_loss"].item() == pytest.approx(
        hand_sigmoid(V, W, 10.0, -10.0, same), rel=1e-5
    )
    plain = identity_siglip(3, image_id_positives=False)(
        step_with(torch.tensor(V), torch.tensor(W), ids)
    )
    diagonal = [[i == j for j in range(4)] for i in range(4)]
    assert plain["sigmoid_loss"].item() == pytest.approx(
        hand_sigmoid(V, W, 10.0, -10.0, diagonal), rel=1e-5
    )


def test_scale_and_bias_learn_from_the_paper_initialisation() -> None:
    """t′ = log 10 and b = −10; both get gradients, and ITM reads τ = 1/t."""
    siglip = identity_siglip(3)
    assert siglip.log_scale.item() == pytest.approx(math.log(10.0))
    assert siglip.temperature.item() == pytest.approx(0.1)
    siglip(step_with(torch.tensor(V), torch.tensor(W), [0, 1, 2, 3]))["sigmoid_loss"].backward()
    assert siglip.log_scale.grad is not None and siglip.bias.grad is not None
    assert siglip.bias.grad.item() < 0  # b = −10 is too low for the 4 positives: it rises


def test_a_non_positive_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="siglip scale must be positive"):
        SigmoidContrastive(scale=0.0)
