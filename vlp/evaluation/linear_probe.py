"""Linear probe: how linearly separable the frozen image features are.

Only the evaluation split reaches the evaluator, so the probe is fit on one
half of it and scored on the other: images sorted by id, even positions fit,
odd positions scored, so the split is the same on any number of ranks. The
classifier is multinomial logistic regression with an L2 penalty on features
standardised with the fitting half's statistics, fit by L-BFGS; everything is
deterministic for given features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp.encoding import Encoding


def probe_features(image: Encoding) -> Tensor:
    """The pooled output next to the mean patch token: contrastive objectives train the first,
    masked prediction (data2vec, whose fine-tuning mean-pools) the second."""
    return torch.cat([image.pooled, image.tokens.mean(1)], dim=-1)


def fit_logistic_regression(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float, steps: int
) -> tuple[Tensor, Tensor]:
    """Weight [D, C] and bias [C] minimising mean cross-entropy + λ/2 · ‖W‖²."""
    # Evaluation runs in inference mode, whose tensors cannot take part in autograd.
    with torch.inference_mode(False), torch.enable_grad():
        x, y = features.clone(), labels.clone()
        weight = x.new_zeros(x.shape[1], num_classes, requires_grad=True)
        bias = x.new_zeros(num_classes, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + weight_decay / 2 * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    return weight.detach(), bias.detach()


def linear_probe_accuracy(
    features: Tensor,
    labels: Tensor,
    image_ids: Tensor,
    weight_decay: float = 1e-3,
    steps: int = 100,
) -> float:
    """Top-1 accuracy on the odd half of the labelled images, fit on the even half.

    Args:
        features: [N, D] frozen image features; labels [N] (−1: unlabelled);
            image_ids [N] give the deterministic order of the split.
    """
    known = labels >= 0
    features, labels, image_ids = features[known].float(), labels[known], image_ids[known]
    if labels.shape[0] < 2:
        raise ValueError("a linear probe needs at least two labelled images")
    order = image_ids.argsort()
    features, labels = features[order], labels[order]
    fit_x, fit_y, test_x, test_y = features[::2], labels[::2], features[1::2], labels[1::2]
    mean, std = fit_x.mean(0), fit_x.std(0, unbiased=False).clamp_min(1e-6)
    weight, bias = fit_logistic_regression(
        (fit_x - mean) / std, fit_y, int(labels.max()) + 1, weight_decay, steps
    )
    predicted = (((test_x - mean) / std) @ weight + bias).argmax(-1)
    return (predicted == test_y).float().mean().item()
