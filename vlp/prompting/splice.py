"""Putting continuous prompt vectors into a model's stream of token embeddings.

P-tuning embeds a template by looking up every token and then overwriting the pseudo
tokens' rows with the prompt encoder's outputs h_1..h_m; the anchors stay real words.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn


def splice(token_embeds: Tensor, slot_mask: Tensor, prompts: Tensor) -> Tensor:
    """``token_embeds`` [B, L, D] with the i-th slot of each row (``slot_mask`` [B, L]) replaced
    by prompt vector i; ``prompts`` is [m, D] for all rows or [B, m, D] per row."""
    if slot_mask.shape != token_embeds.shape[:2]:
        raise ValueError(f"slot mask {tuple(slot_mask.shape)} for {tuple(token_embeds.shape)}")
    count = prompts.shape[-2]
    if not bool((slot_mask.sum(1) == count).all()):
        raise ValueError(f"every row needs exactly {count} slots, got {slot_mask.sum(1).tolist()}")
    source = prompts.to(token_embeds.dtype).expand(slot_mask.shape[0], *prompts.shape[-2:])
    # Slots are filled in row-major order: row b's i-th slot takes source[b, i].
    return token_embeds.masked_scatter(slot_mask.unsqueeze(-1), source)


@contextmanager
def prompts_spliced(embedding: nn.Module, slot_mask: Tensor, prompts: Tensor) -> Iterator[None]:
    """Inside the block, calls of ``embedding`` that embed the whole prompt return their
    output with ``prompts`` spliced in: the next call, and any later call longer than the
    prompt (``generate`` without a cache re-embeds the prompt and the tokens so far).
    Cached decoding steps embed only new tokens and are left alone.

    For models that must be called with token ids rather than ``inputs_embeds``: Flamingo
    finds its ``<image>`` tokens by id, and a text encoder's own forward does its pooling.
    """
    first = True
    length = slot_mask.shape[1]

    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        nonlocal first
        if not (first or output.shape[1] > length):
            return None
        first = False
        slots = F.pad(slot_mask, (0, output.shape[1] - length), value=False)
        return splice(output, slots, prompts)

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
