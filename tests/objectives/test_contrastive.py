"""ITC against the InfoNCE formula computed by hand on small tensors."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TypeVar

import pytest
import torch

from vlp.encoding import Encoding
from vlp.objectives.contrastive import Contrastive, ImageTextSpace
from vlp.step import Step

S = TypeVar("S", bound=ImageTextSpace)


def with_identity_projections(space: S) -> S:
    """``space`` bound with identity projections, so embeddings are the normalised inputs."""
    dim = space.embed_dim
    space.bind(SimpleNamespace(vision=SimpleNamespace(width=dim), text=SimpleNamespace(width=dim)))
    with torch.no_grad():
        for proj in (space.image_proj, space.text_proj):
            proj.weight.copy_(torch.eye(dim))
            proj.bias.zero_()
    return space


def identity_itc(dim: int, **kwargs) -> Contrastive:
    return with_identity_projections(Contrastive(embed_dim=dim, **kwargs))


def step_with(images: torch.Tensor, texts: torch.Tensor, image_ids: list[int]) -> Step:
    encoders = SimpleNamespace(
        vision=lambda _: Encoding(pooled=images, tokens=images[:, None]),
        text=lambda ids, mask: Encoding(pooled=texts, tokens=texts[:, None]),
    )
    batch = {
        "images": torch.zeros(len(image_ids)),
        "text_ids": torch.zeros(len(image_ids)),
        "text_mask": torch.zeros(len(image_ids)),
        "image_ids": torch.tensor(image_ids),
    }
    return Step(batch, encoders, {})


def hand_infonce(v: list[list[float]], w: list[list[float]], tau: float, ids: list[int]) -> float:
    """½(i2t + t2i) with loops, positives = same image id, mass split evenly among them."""

    def norm(x):
        n = math.sqrt(sum(a * a for a in x))
        return [a / n for a in x]

    v, w = [norm(x) for x in v], [norm(x) for x in w]
    dot = [[sum(a * b for a, b in zip(vi, wk, strict=True)) / tau for wk in w] for vi in v]

    def direction(scores):
        total = 0.0
        for i, row in enumerate(scores):
            log_z = math.log(sum(math.exp(s) for s in row))
            positives = [k for k in range(len(row)) if ids[k] == ids[i]]
            total += -sum((row[k] - log_z) / len(positives) for k in positives)
        return total / len(scores)

    transposed = [list(col) for col in zip(*dot, strict=True)]
    return 0.5 * (direction(dot) + direction(transposed))


def test_loss_matches_hand_computed_infonce() -> None:
    v = [[1.0, 0.2, -0.3], [0.1, 1.0, 0.4], [-0.5, 0.3, 1.0], [0.7, -0.7, 0.1]]
    w = [[0.9, 0.1, 0.0], [0.3, 0.8, 0.1], [-0.2, 0.2, 0.9], [0.1, 0.1, -1.0]]
    itc = identity_itc(3, temperature=0.1)
    terms = itc(step_with(torch.tensor(v), torch.tensor(w), [0, 1, 2, 3]))
    expected = hand_infonce(v, w, 0.1, [0, 1, 2, 3])
    assert terms["contrastive_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_captions_of_one_image_are_positives_not_negatives() -> None:
    v = [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]  # rows 0 and 1 are two captions' copies of image 7
    w = [[1.0, 0.05], [0.9, 0.2], [0.1, 1.0]]
    ids = [7, 7, 9]
    with_ids = identity_itc(2, temperature=0.2)(step_with(torch.tensor(v), torch.tensor(w), ids))
    assert with_ids["contrastive_loss"].item() == pytest.approx(
        hand_infonce(v, w, 0.2, ids), rel=1e-5
    )
    plain = identity_itc(2, temperature=0.2, image_id_positives=False)
    without = plain(step_with(torch.tensor(v), torch.tensor(w), ids))
    assert without["contrastive_loss"].item() == pytest.approx(
        hand_infonce(v, w, 0.2, [0, 1, 2]), rel=1e-5
    )


def test_temperature_starts_at_0p07_and_each_optimizer_step_clamps_it() -> None:
    itc = identity_itc(2)
    assert itc.temperature.item() == pytest.approx(0.07)
    for updated, clamped in [(1e-6, 0.001), (3.0, 0.5), (0.2, 0.2)]:
        with torch.no_grad():
            itc.temperature.fill_(updated)  # where an update left it
        itc.after_optimizer_step()
        assert itc.temperature.item() == pytest.approx(clamped)
        terms = itc(step_with(torch.eye(2), torch.eye(2), [0, 1]))
        assert terms["temperature"].item() == pytest.approx(clamped)
        assert torch.isfinite(terms["contrastive_loss"])


@pytest.mark.parametrize("temperature", [0.0005, 0.7])
def test_a_temperature_outside_its_range_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature_range"):
        Contrastive(embed_dim=2, temperature=temperature)


def test_gradient_reaches_temperature_and_both_projections() -> None:
    itc = identity_itc(3)
    v, w = torch.randn(4, 3), torch.randn(4, 3)
    itc(step_with(v, w, [0, 1, 2, 3]))["contrastive_loss"].backward()
    for param in (itc.temperature, itc.image_proj.weight, itc.text_proj.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_two_uses_in_one_step_backpropagate_into_one_temperature() -> None:
    """A mixture runs ITC on two datasets before one backward (τ used twice)."""
    itc = identity_itc(3)
    v, w = torch.randn(4, 3), torch.randn(4, 3)
    first = itc(step_with(v, w, [0, 1, 2, 3]))["contrastive_loss"]
    second = itc(step_with(w, v, [0, 1, 2, 3]))["contrastive_loss"]
    (first + second).backward()
    separate = identity_itc(3)
    separate(step_with(v, w, [0, 1, 2, 3]))["contrastive_loss"].backward()
    separate(step_with(w, v, [0, 1, 2, 3]))["contrastive_loss"].backward()
    assert torch.allclose(itc.temperature.grad, separate.temperature.grad)


def test_perfectly_aligned_pairs_give_near_zero_loss() -> None:
    eye = torch.eye(4)
    loss = identity_itc(4, temperature=0.01)(step_with(eye, eye, [0, 1, 2, 3]))["contrastive_loss"]
    assert loss.item() < 1e-6
