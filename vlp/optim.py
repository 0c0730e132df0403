"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn
from torch.optim import Optimizer

# Parameters that are tokens or queries rather than weights: never decayed.
_LEARNED_TOKENS = (
    "pos_embed",
    "cls_token",
    "reg_token",
    "dist_token",  # timm's DeiT distillation token
    "mask_token",  # the vision encoder's masked-patch embedding (data2vec, BEiT)
    "latents",
    "frame_time",
    "rows",  # Flamingo's added <image>/<|endofchunk|> rows (vlp.flamingo.added_tokens)
)
# Modules none of whose parameters are decayed: of Flamingo's new modules OpenFlamingo
# decays only the gated cross-attention blocks (``shared/specs/flamingo.md`` §2.3).
_UNDECAYED_MODULES = frozenset({"resampler"})


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]], lr_multipliers: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Groups by (learning-rate multiplier, weight decay or not).

    Weight decay applies to matrices only: biases, norms, τ, the ViT
    position/class/register/distillation tokens, the mask token, Flamingo's added token
    rows and the whole Perceiver Resampler get none (ALBEF's factory decays τ and those
    tokens by accident, ``shared/specs/tcl_albef.md`` §0; OpenFlamingo leaves the
    resampler and the added rows undecayed, ``shared/specs/flamingo.md`` §2.3). A
    parameter takes the multiplier of the longest module-name prefix in
    ``lr_multipliers`` (e.g. ``{"encoders.text": 0.1}`` for a pretrained tower), else 1.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        decays = (
            param.ndim >= 2
            and not name.endswith(_LEARNED_TOKENS)
            and _UNDECAYED_MODULES.isdisjoint(name.split(".")[:-1])
        )
        prefixes = [p for p in lr_multipliers if name == p or name.startswith(p + ".")]
        multiplier = lr_multipliers[max(prefixes, key=len)] if prefixes else 1.0
        groups.setdefault((multiplier, decays), []).append(param)
    return [
        {"params": params, "lr_multiplier": multiplier, **({} if decay else {"weight_decay": 0.0})}
        for (multiplier, decay), params in groups.items()
    ]


def apply_lr_multipliers(optimizer: Optimizer) -> None:
    """Scale each group's learning rate (set by the optimizer's own ``lr``) by its multiplier."""
    for group in optimizer.param_groups:
        group["lr"] *= group.get("lr_multiplier", 1.0)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up from 0, then cosine to ``min_ratio``, stepped per step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
