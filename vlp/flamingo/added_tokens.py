"""Trainable rows for added tokens beside a frozen vocabulary.

The original embedding and output matrices stay frozen parameters that no optimizer
holds, so they are provably unchanged by training (weight decay included); only the
few added rows are new parameters. This replaces resizing the matrices and masking
the gradient of all but the new rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AddedTokenEmbedding(nn.Module):
    """Looks up ``added_ids`` in ``rows`` and every other id in the original ``base``."""

    def __init__(self, base: nn.Embedding, added_ids: list[int], rows: nn.Parameter) -> None:
        super().__init__()
        self.base = base
        self.rows = rows  # [len(added_ids), D]
        self.register_buffer("added_ids", torch.tensor(added_ids), persistent=False)

    @property
    def weight(self) -> Tensor:
        """The frozen matrix: some Hugging Face code reads its dtype or device."""
        return self.base.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        is_added = input_ids.unsqueeze(-1) == self.added_ids  # [B, L, k] one-hot
        original = self.base(input_ids.masked_fill(is_added.any(-1), 0))
        added = is_added.to(self.rows.dtype) @ self.rows
        return torch.where(is_added.any(-1, keepdim=True), added, original)


class AddedTokenHead(nn.Module):
    """The original output layer's logits, widened to ``vocab_size``, with the added
    tokens' columns computed from their own ``rows``."""

    def __init__(
        self, base: nn.Module, added_ids: list[int], rows: nn.Parameter, vocab_size: int
    ) -> None:
        super().__init__()
        self.base = base
        self.rows = rows  # [len(added_ids), D]; the embedding's own rows when tied
        self.vocab_size = vocab_size
        self.positions: Tensor | None = None
        self.register_buffer("added_ids", torch.tensor(added_ids), persistent=False)

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @contextmanager
    def predicting_at(self, positions: Tensor | None) -> Iterator[None]:
        """Inside, logits are computed at the True ``positions`` [B, L] only, as [M, V]:
        a loss that reads a few positions then never materialises [B, L, V]."""
        self.positions = positions
        try:
            yield
        finally:
            self.positions = None

    def forward(self, hidden: Tensor) -> Tensor:
        if self.positions is not None:
            hidden = hidden[self.positions]
        logits = self.base(hidden)
        logits = F.pad(logits, (0, self.vocab_size - logits.shape[-1]))
        return logits.index_copy(-1, self.added_ids, hidden @ self.rows.T)
