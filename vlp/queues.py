"""Queues of momentum features (MoCo; ALBEF/TCL keep 65,536 image and text features).

Every rank enqueues the same gathered features, so queues stay identical
across ranks. Unlike the reference code, any batch size works: writes wrap
around the ring, and slots never written are left out of the keys rather
than filled with noise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FeatureQueue(nn.Module):
    """A ring buffer of L2-normalised features with the image id of each."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("image_ids", torch.zeros(size, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[Tensor, Tensor]:
        """The features and ids written so far (a copy, safe to use after the next enqueue)."""
        return self.features[self.filled].clone(), self.image_ids[self.filled].clone()

    @torch.no_grad()
    def enqueue(self, features: Tensor, image_ids: Tensor) -> None:
        """Write rows in order after the pointer, wrapping; keep the newest when too many."""
        size = self.features.shape[0]
        features, image_ids = features[-size:], image_ids[-size:]
        slots = (self.pointer + torch.arange(features.shape[0], device=features.device)) % size
        self.features[slots] = features.to(self.features.dtype)
        self.image_ids[slots] = image_ids
        self.filled[slots] = True
        self.pointer.copy_((self.pointer + features.shape[0]) % size)
