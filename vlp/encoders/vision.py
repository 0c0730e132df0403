"""Vision tower: any timm model, returning pooled, patch and per-layer features."""

from __future__ import annotations

from typing import Any

import timm
from torch import Tensor, nn

from vlp.encoding import Encoding


class VisionEncoder(nn.Module):
    """A timm backbone without its classifier.

    Args:
        name: timm model name, e.g. ``vit_base_patch16_224`` or ``resnet50``.
        pretrained: load timm's pretrained weights (from the hub or its cache).
        checkpoint_path: a local weights file (safetensors, or a ``torch.save``
            file loaded weights-only) used instead of hub weights.
        image_size: input resolution; ViTs interpolate their position embeddings.
        model_kwargs: extra ``timm.create_model`` arguments, e.g. ``depth`` or
            ``embed_dim`` for a tiny model.
    """

    def __init__(
        self,
        name: str = "vit_tiny_patch16_224",
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs: dict[str, Any] = {
            "pretrained": pretrained,
            "num_classes": 0,
            "checkpoint_path": checkpoint_path or "",
            **(model_kwargs or {}),
        }
        try:
            sized = {"img_size": image_size} if image_size else {}
            self.model = timm.create_model(name, **sized, **kwargs)
        except TypeError:  # convnets take any resolution and have no img_size argument
            self.model = timm.create_model(name, **kwargs)
        self.width: int = self.model.num_features
        self.num_prefix_tokens: int = getattr(self.model, "num_prefix_tokens", 0)

    def forward(self, images: Tensor) -> Encoding:
        # Intermediates come as NCHW patch grids (prefix tokens dropped) for every family.
        final, intermediates = self.model.forward_intermediates(images)
        pooled = self.model.forward_head(final, pre_logits=True)
        tokens = _as_tokens(final)[:, self.num_prefix_tokens :]
        return Encoding(
            pooled=pooled, tokens=tokens, hidden_states=tuple(_as_tokens(h) for h in intermediates)
        )


def _as_tokens(x: Tensor) -> Tensor:
    """Convnet feature maps (NCHW) as token sequences (NLC)."""
    return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x
