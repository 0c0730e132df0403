"""Perceiver Resampler (Flamingo §2.1): any number of visual tokens → a few latents per medium."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlp.activation_checkpointing import run_layer
from vlp.flamingo.attention import CrossAttention, feed_forward


class ResamplerLayer(nn.Module):
    """Latents attend to [media tokens ; latents], then an MLP; both residual, pre-norm."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.media_norm = nn.LayerNorm(dim)
        self.latent_norm = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, dim, heads, dim_head)
        self.ff = feed_forward(dim, ff_mult)

    def forward(self, latents: Tensor, media: Tensor) -> Tensor:
        queries = self.latent_norm(latents)
        # Keys/values include the latents themselves (the paper's Figure 4).
        context = torch.cat([self.media_norm(media), queries], dim=1)
        latents = latents + self.attn(queries, context)
        return latents + self.ff(latents)


class PerceiverResampler(nn.Module):
    """Resample each medium (an image or a clip of frames) to ``num_latents`` tokens.

    Each medium is resampled on its own, and the same wherever it sits in a sequence:
    there is no per-medium embedding (Flamingo has none for images; OpenFlamingo switched
    its own off, ``shared/specs/flamingo.md`` §1.1), so the k-th image of a few-shot
    prompt gets the visual tokens it had in training. A learned per-frame time embedding
    is added to every token of a frame, so a clip's frame order matters. Frames × patches
    are then flattened into one sequence per medium; there are no spatial position
    embeddings.

    Args:
        dim: width of the visual tokens (the vision encoder's width), kept throughout.
        depth, heads, dim_head, ff_mult: layer sizes (paper: 6 layers; OpenFlamingo: 8×64).
        num_latents: output tokens per medium (paper: 64).
        max_frames: most frames per medium (size of the per-frame embedding table).
    """

    def __init__(
        self,
        dim: int,
        depth: int = 6,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        num_latents: int = 64,
        max_frames: int = 8,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.frame_time = nn.Parameter(torch.randn(max_frames, 1, dim) * 0.02)
        self.layers = nn.ModuleList(
            ResamplerLayer(dim, heads, dim_head, ff_mult) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.recompute = False  # activation checkpointing, per layer

    def checkpoint_activations(self) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them."""
        self.recompute = True

    @property
    def num_latents(self) -> int:
        return self.latents.shape[0]

    def forward(self, media: Tensor) -> Tensor:
        """``[B, T_media, F_frames, N_tokens, D]`` patch tokens → ``[B, T_media, num_latents, D]``."""
        batch, num_media, num_frames = media.shape[:3]
        if num_frames > len(self.frame_time):
            raise ValueError(
                f"{num_frames} frames exceed the resampler's {len(self.frame_time)} "
                "frame time embeddings"
            )
        media = (media + self.frame_time[:num_frames]).flatten(2, 3)  # [B, T, F·N, D]
        media = media.flatten(0, 1)  # each medium is its own sequence
        latents = self.latents.expand(len(media), -1, -1)
        for layer in self.layers:
            latents = run_layer(self.recompute, layer, latents, media)
        return self.norm(latents).unflatten(0, (batch, num_media))
