"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch import nn


def decay_groups(named: Iterable[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases, norms, τ and embeddings-as-vectors get none.

    ALBEF's factory decays τ and the ViT position/class tokens by accident
    (``shared/specs/tcl_albef.md`` §0); deciding by dimension avoids that.
    """
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        is_matrix = param.ndim >= 2 and not name.endswith(("pos_embed", "cls_token", "reg_token"))
        (decay if is_matrix else no_decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up from 0, then cosine to ``min_ratio``, stepped per step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
