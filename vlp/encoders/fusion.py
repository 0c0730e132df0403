"""Fusion encoder: text tokens attend to themselves and to image tokens (ALBEF §3.1)."""

from __future__ import annotations

from torch import Tensor, nn

from vlp.activation_checkpointing import run_layer
from vlp.encoding import Encoding


class FusionLayer(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the image, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def forward(self, text: Tensor, text_pad: Tensor, image: Tensor) -> Tensor:
        x = self.self_norm(text)
        text = text + self.self_attn(x, x, x, key_padding_mask=text_pad, need_weights=False)[0]
        x = self.cross_norm(text)
        text = text + self.cross_attn(x, image, image, need_weights=False)[0]
        return text + self.mlp(self.mlp_norm(text))


class FusionEncoder(nn.Module):
    """A stack of :class:`FusionLayer` over the text encoder's tokens.

    Args:
        text_width: width of the text tokens (the fusion width).
        image_width: width of the image tokens; projected to ``text_width`` if different.
        depth: number of layers (ALBEF uses BERT layers 6–11, i.e. 6).
    """

    def __init__(
        self,
        text_width: int,
        image_width: int,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_to_text = (
            nn.Identity() if image_width == text_width else nn.Linear(image_width, text_width)
        )
        self.layers = nn.ModuleList(
            FusionLayer(text_width, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(text_width)
        self.width = text_width
        self.recompute = False  # activation checkpointing, per layer

    def checkpoint_activations(self) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them."""
        self.recompute = True

    def ffn_modules(self) -> list[nn.Module]:
        """Each layer's MLP, whose output before the residual add is data2vec's target."""
        return [layer.mlp for layer in self.layers]

    def forward(self, text: Encoding, image: Encoding) -> Encoding:
        image_tokens = self.image_to_text(image.tokens)
        text_pad = text.token_mask == 0
        x = text.tokens
        hidden: list[Tensor] = []
        for layer in self.layers:
            x = run_layer(self.recompute, layer, x, text_pad, image_tokens)
            hidden.append(x)
        x = self.norm(x)
        return Encoding(pooled=x[:, 0], tokens=x, mask=text.mask, hidden_states=tuple(hidden))
