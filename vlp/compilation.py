"""Regional compilation: ``torch.compile`` every layer of the encoders' stacks.

``model.compile_layers: true`` compiles each transformer block of the vision, text and
fusion towers, and of their EMA teachers, one at a time (``nn.Module.compile``, so the
state dict keeps its keys and checkpoints and exports are unchanged). Identical blocks
share one compiled graph, so compiling takes seconds per kind of block, not per layer.
The fused kernels cut the number of launches, which bounds small models on a GPU.
Objectives' own stacks (Flamingo's decoder, set per step with media) stay eager.
"""

from __future__ import annotations

from torch import nn

from vlp.sharding import stack_layers


def compile_stacks(*modules: nn.Module) -> int:
    """Compile, in place, each layer of every stack in ``modules``; returns how many."""
    layers = [layer for module in modules for layer in stack_layers(module)]
    for layer in layers:
        layer.compile()
    return len(layers)
