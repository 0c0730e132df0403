"""Prompt-only training: the backbone frozen, only the prompt (and a head) learned.

This is P-tuning's LAMA setting, P-tuning v2 and CoOp: a few thousand parameters
adapt a frozen model, so the count is worth reporting next to every result.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    def __str__(self) -> str:
        share = 100 * self.trainable / max(self.total, 1)
        return f"{self.trainable:,} of {self.total:,} parameters trainable ({share:.3g} %)"


def train_only(model: nn.Module, *trainable: nn.Module) -> ParameterCount:
    """Freeze every parameter of ``model`` except those of ``trainable`` (the prompt
    encoder, an optional head; inside ``model`` or not) and count what is left to train."""
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    parameters = {id(p): p for m in (model, *trainable) for p in m.parameters()}.values()
    return ParameterCount(
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
        total=sum(p.numel() for p in parameters),
    )
