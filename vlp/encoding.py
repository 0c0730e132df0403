"""The one output type every encoder returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Encoding:
    """What an encoder produced for a batch.

    ``tokens`` are the local features objectives align (image patches or text
    tokens); ``pooled`` is the global summary ([CLS] or the pooled image).
    """

    pooled: Tensor  # [B, D]
    tokens: Tensor  # [B, N, D]
    mask: Tensor | None = None  # [B, N], 1 for real tokens; None when all are real
    hidden_states: tuple[Tensor, ...] = ()  # per-layer outputs, first block first

    @property
    def token_mask(self) -> Tensor:
        """``mask`` with the all-real case made explicit."""
        if self.mask is not None:
            return self.mask
        return self.tokens.new_ones(self.tokens.shape[:2], dtype=self.tokens.dtype).long()

    def rows(self, index: Tensor) -> Encoding:
        """The encoding of the selected batch rows (e.g. hard negatives)."""
        return Encoding(
            pooled=self.pooled[index],
            tokens=self.tokens[index],
            mask=None if self.mask is None else self.mask[index],
            hidden_states=tuple(h[index] for h in self.hidden_states),
        )
