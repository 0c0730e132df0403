"""Deep prompts: P-tuning v2 (Liu et al., 2022) / prefix tuning (Li & Liang, 2021).

Every attention layer l gets m learned key and value vectors per head, P_k^l and P_v^l,
that all tokens attend to as if they were m earlier tokens:

    head^l = Attention(x W_q, [P_k^l; x W_k], [P_v^l; x W_v])

They enter a Hugging Face causal LM as a pre-filled ``DynamicCache`` (the ``cache``
argument in transformers 5; ``past_key_values`` before), with the attention mask
extended by m ones. Like cached tokens, the prefix shifts the text's positions by m.
Optionally (``prefix_projection``) the prefix is reparameterised by an MLP
(Embedding(m, H) → Linear → Tanh → Linear); P-tuning v2 leaves it off by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel


class DeepPrompts(nn.Module):
    """Per-layer key/value prefixes of ``num_virtual_tokens`` positions.

    Args:
        num_virtual_tokens: m, the prefix length (P-tuning v2's ``pre_seq_len``).
        num_layers: attention layers of the LM.
        num_kv_heads: key/value heads per layer (fewer than query heads under GQA).
        head_dim: width of each head.
        prefix_projection: produce the prefix with an MLP instead of learning it directly.
        token_dim: width of the MLP's input embedding (the LM's hidden size).
        prefix_hidden_size: the MLP's hidden width (P-tuning v2: 512).
        dropout: on the keys and values (P-tuning v2 uses 0.1).
        init_std: std of the initial prefix (or of the MLP's input embedding).
    """

    def __init__(
        self,
        num_virtual_tokens: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        prefix_projection: bool = False,
        token_dim: int | None = None,
        prefix_hidden_size: int = 512,
        dropout: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.shape = (num_layers, 2, num_kv_heads, num_virtual_tokens, head_dim)
        self.projection: nn.Module | None = None
        if prefix_projection:
            if token_dim is None:
                raise ValueError("prefix_projection needs token_dim")
            self.prefix = nn.Parameter(torch.randn(num_virtual_tokens, token_dim) * init_std)
            self.projection = nn.Sequential(
                nn.Linear(token_dim, prefix_hidden_size),
                nn.Tanh(),
                nn.Linear(prefix_hidden_size, num_layers * 2 * num_kv_heads * head_dim),
            )
        else:
            self.prefix = nn.Parameter(torch.randn(self.shape) * init_std)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def for_model(cls, lm: PreTrainedModel, num_virtual_tokens: int, **kwargs: Any) -> DeepPrompts:
        """Sizes read from the LM's config (``head_dim`` and GQA's ``num_key_value_heads``
        where the family has them)."""
        config = lm.config.get_text_config()
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            num_virtual_tokens,
            num_layers=config.num_hidden_layers,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            token_dim=config.hidden_size,
            **kwargs,
        )

    def key_values(self) -> Tensor:
        """[layers, 2 (key, value), kv_heads, m, head_dim]."""
        if self.projection is None:
            return self.prefix
        layers, _, heads, length, head_dim = self.shape
        flat = self.projection(self.prefix)  # [m, layers · 2 · heads · head_dim]
        return flat.view(length, layers, 2, heads, head_dim).permute(1, 2, 3, 0, 4)

    @property
    def length(self) -> int:
        """m: the positions the prefix takes before the text."""
        return self.shape[3]

    def cache(self, batch: int) -> DynamicCache:
        """A fresh cache holding the prefix for ``batch`` rows (the LM appends to it)."""
        key_values = self.dropout(self.key_values())
        return DynamicCache(
            [(keys.expand(batch, *keys.shape), values.expand(batch, *values.shape))
             for keys, values in key_values]
        )  # fmt: skip

    def forward(self, attention_mask: Tensor) -> dict[str, Any]:
        """The LM's ``cache`` and extended ``attention_mask`` for a batch whose text mask is
        ``attention_mask`` [B, L]: call ``lm(input_ids=ids, **deep_prompts(mask))``."""
        batch = attention_mask.shape[0]
        ones = attention_mask.new_ones(batch, self.length)
        return {
            "cache": self.cache(batch),
            "attention_mask": torch.cat([ones, attention_mask], dim=1),
        }
