"""Vision tower: any timm model, returning pooled, patch and per-layer features."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import timm
import torch
from torch import Tensor, nn

from vlp.encoding import Encoding
from vlp.staged import checkpoint_weights

VLP_CHECKPOINT_SUFFIX = ".ckpt"  # Lightning's; other files are handed to timm


class VisionEncoder(nn.Module):
    """A timm backbone without its classifier.

    Args:
        name: timm model name, e.g. ``vit_base_patch16_224`` or ``resnet50``.
        pretrained: load timm's pretrained weights (from the hub or its cache).
        checkpoint_path: a local weights file (safetensors, or a ``torch.save``
            file loaded weights-only) used instead of hub weights; or a vlp training
            checkpoint (``.ckpt``), whose vision tower starts this one (staged training,
            e.g. Flamingo on a tower pretrained with ITC).
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
        from_vlp = bool(checkpoint_path) and str(checkpoint_path).endswith(VLP_CHECKPOINT_SUFFIX)
        kwargs: dict[str, Any] = {
            "pretrained": pretrained,
            "num_classes": 0,
            "checkpoint_path": "" if from_vlp else checkpoint_path or "",
            **(model_kwargs or {}),
        }
        try:
            sized = {"img_size": image_size} if image_size else {}
            self.model = timm.create_model(name, **sized, **kwargs)
        except TypeError:  # convnets take any resolution and have no img_size argument
            self.model = timm.create_model(name, **kwargs)
        if from_vlp:
            self.model.load_state_dict(vision_weights(checkpoint_path))
        self.width: int = self.model.num_features
        self.num_prefix_tokens: int = getattr(self.model, "num_prefix_tokens", 0)
        self.mask_token: nn.Parameter | None = None

    def add_mask_token(self) -> None:
        """The learned embedding of a masked patch (data2vec, BEiT), made only when an objective
        masks images: a parameter no loss reaches would stall DDP's gradient reduction."""
        if self.mask_token is None:
            if not hasattr(self.model, "patch_embed"):
                raise ValueError(f"{type(self.model).__name__} has no patch embedding to mask")
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.width))
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, columns) of patches, the shape of an image mask."""
        return tuple(self.model.patch_embed.grid_size)

    def ffn_modules(self) -> list[nn.Module]:
        """Each block's MLP, whose output before the residual add is data2vec's target."""
        if not hasattr(self.model, "blocks"):
            raise ValueError(f"{type(self.model).__name__} has no transformer blocks")
        return [block.mlp for block in self.model.blocks]

    def checkpoint_activations(self) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them
        (timm's gradient checkpointing)."""
        self.model.set_grad_checkpointing(True)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Encoding:
        """Encode ``images``; with ``mask`` [B, H·W] (True = masked) the embeddings of masked
        patches become the mask token before position embeddings and blocks (data2vec/BEiT)."""
        # Intermediates come as NCHW patch grids (prefix tokens dropped) for every family.
        with self._masked_patches(mask):
            final, intermediates = self.model.forward_intermediates(images)
        pooled = self.model.forward_head(final, pre_logits=True)
        tokens = _as_tokens(final)[:, self.num_prefix_tokens :]
        return Encoding(
            pooled=pooled, tokens=tokens, hidden_states=tuple(_as_tokens(h) for h in intermediates)
        )

    @contextmanager
    def _masked_patches(self, mask: Tensor | None) -> Iterator[None]:
        if mask is None:
            yield
            return
        if self.mask_token is None:
            raise ValueError("masking images needs the mask token: call add_mask_token() first")

        def replace(_module: nn.Module, _inputs: Any, patches: Tensor) -> Tensor:
            token = self.mask_token.to(patches.dtype)
            return torch.where(mask.unsqueeze(-1), token, patches)

        handle = self.model.patch_embed.register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()


def vision_weights(checkpoint_path: str) -> dict[str, Tensor]:
    """The timm model's weights inside a vlp checkpoint (``encoders.vision.model.*``),
    loaded weights-only."""
    prefix = "encoders.vision.model."
    weights = checkpoint_weights(checkpoint_path, prefix)
    if not weights:
        raise ValueError(f"{checkpoint_path}: no vision encoder weights ({prefix}*)")
    return weights


def _as_tokens(x: Tensor) -> Tensor:
    """Convnet feature maps (NCHW) as token sequences (NLC)."""
    return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x
