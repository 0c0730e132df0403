"""The attention and feed-forward pieces shared by the resampler and the LM's cross-attention."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a context; bias-free projections as in Flamingo.

    ``mask`` ([N, L, S], True = may attend) may leave a query row with no key at all;
    such a row outputs exactly zero instead of the NaN of a softmax over nothing.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim, bias=False)

    def forward(self, queries: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        q = self._split_heads(self.to_q(queries))
        k, v = (self._split_heads(x) for x in self.to_kv(context).chunk(2, dim=-1))
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attends = mask.any(dim=-1, keepdim=True).unsqueeze(1)  # [N, 1, L, 1]
            # Rows with no allowed key attend everywhere (finite), then are zeroed.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1) | ~attends)
            out = out * attends
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _split_heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [N, H, L, d_head]


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Pre-norm MLP: LN → Linear(d, mult·d) → GELU → Linear(mult·d, d), bias-free."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, mult * dim, bias=False),
        nn.GELU(),
        nn.Linear(mult * dim, dim, bias=False),
    )
