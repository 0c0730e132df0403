"""Shared encoders: a timm vision tower, a Hugging Face text tower, a fusion stack."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vlp.encoders.fusion import FusionEncoder
from vlp.encoders.text import TextEncoder
from vlp.encoders.vision import VisionEncoder


@dataclass(frozen=True)
class FusionConfig:
    """Sizes of the fusion encoder; its widths come from the two towers."""

    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0


class Encoders(nn.Module):
    """The towers every objective shares in one step."""

    def __init__(
        self, vision: VisionEncoder, text: TextEncoder, fusion: FusionConfig | None = None
    ) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.fusion = (
            None
            if fusion is None
            else FusionEncoder(
                text.width,
                vision.width,
                fusion.depth,
                fusion.heads,
                fusion.mlp_ratio,
                fusion.dropout,
            )
        )

    def checkpoint_activations(self) -> None:
        """Recompute every tower's layer activations in the backward pass."""
        self.vision.checkpoint_activations()
        self.text.checkpoint_activations()
        if self.fusion is not None:
            self.fusion.checkpoint_activations()


__all__ = ["Encoders", "FusionConfig", "FusionEncoder", "TextEncoder", "VisionEncoder"]
