"""Activation checkpointing: keep a layer's input, recompute its activations in backward.

Saves the memory of every intermediate inside the layer for about one more forward pass
of compute (``model.activation_checkpointing: true``). Non-reentrant
``torch.utils.checkpoint``: it replays the layer's random draws (dropout), takes keyword
arguments, and composes with DDP and FSDP2 (whose units are these same layers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint


def run_layer(recompute: bool, layer: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``layer(*args, **kwargs)``; when ``recompute`` and gradients are on, its activations
    are recomputed in the backward pass instead of kept."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False, **kwargs)
    return layer(*args, **kwargs)
