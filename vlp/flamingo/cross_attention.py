"""GATED XATTN-DENSE (Flamingo §2.2): how visual tokens enter a frozen language model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlp.flamingo.attention import CrossAttention, feed_forward


class GatedCrossAttentionBlock(nn.Module):
    """y = x + tanh(α_xattn)·XAttn(LN(x), media); out = y + tanh(α_dense)·FFW(y).

    Both α start at 0, so a freshly inserted block is the identity and the LM's
    behaviour is untouched at initialisation. Only the attention term is masked by
    the media mask; the FFW acts on every token, including text with no image yet.

    Args:
        dim: width of the LM's hidden states.
        media_dim: width of the resampled visual tokens.
    """

    def __init__(
        self, dim: int, media_dim: int, heads: int = 8, dim_head: int = 64, ff_mult: int = 4
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, media_dim, heads, dim_head)
        self.ff = feed_forward(dim, ff_mult)
        self.attn_gate = nn.Parameter(torch.zeros(1))  # α_xattn
        self.ff_gate = nn.Parameter(torch.zeros(1))  # α_dense

    def forward(self, text: Tensor, media: Tensor | None, media_mask: Tensor | None) -> Tensor:
        """``text`` [B, L, dim]; ``media`` [B, T, n, media_dim] (None: no images);
        ``media_mask`` [B, L, T·n] from :func:`vlp.flamingo.media_mask.media_attention_mask`."""
        if media is not None:
            attended = self.attn(self.norm(text), media.flatten(1, 2), media_mask)
            text = text + self.attn_gate.tanh() * attended
        return text + self.ff_gate.tanh() * self.ff(text)
