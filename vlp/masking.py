"""Masks for masked-modelling objectives, as pure functions of ids and a generator.

Token masking follows BERT (Devlin et al. 2019, §3.1) as used by ALBEF/TCL's
MLM (``shared/specs/tcl_albef.md`` §5): each maskable position is selected
with probability ``ratio``; a selected position becomes [MASK] 80% of the
time, a random token 10% of the time, and stays unchanged 10% of the time.

Two deliberate differences from the reference code:

* every special token ([CLS], [SEP], [PAD], [MASK], [UNK], ...) and every
  padding position is protected; ALBEF protects only [PAD] and [CLS], so its
  [SEP] can be masked and predicted (spec §7, pitfall 5);
* random replacements are drawn uniformly from the non-special ids; ALBEF
  draws from the whole vocabulary, special tokens included.

Random numbers are drawn on the generator's device with a fixed number of
draws per call, so a seeded CPU generator gives the same mask whatever the
contents of the batch and wherever the ids live.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

IGNORE_INDEX = -100  # label of a position that is not predicted (PyTorch's cross-entropy default)


class MaskedTokens(NamedTuple):
    """The corrupted input and what to predict from it."""

    ids: Tensor  # [B, L] ids with the selected positions replaced
    labels: Tensor  # [B, L] original id at selected positions, IGNORE_INDEX elsewhere

    @property
    def selected(self) -> Tensor:
        """[B, L] bool, True where a token is to be predicted."""
        return self.labels != IGNORE_INDEX


def mask_tokens(
    ids: Tensor,
    attention_mask: Tensor,
    special_ids: Iterable[int],
    mask_id: int,
    vocab_size: int,
    ratio: float = 0.15,
    generator: torch.Generator | None = None,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> MaskedTokens:
    """BERT's 80/10/10 token masking.

    Args:
        ids: [B, L] token ids.
        attention_mask: [B, L], 0 at padding; padding is never selected.
        special_ids: ids never selected and never used as random replacements;
            ``mask_id`` is added to them.
        mask_id: the [MASK] token.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``
            minus the special ids.
        ratio: probability that a maskable position is selected.
        generator: source of randomness; the global RNG on ``ids.device`` if None.
        mask_fraction: share of selected positions replaced by [MASK].
        random_fraction: share of selected positions replaced by a random token;
            the rest keep their token.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise ValueError(
            f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) "
            "must be non-negative and sum to at most 1"
        )
    draw_device = generator.device if generator is not None else ids.device
    special = torch.tensor(sorted({*special_ids, mask_id}), dtype=torch.long, device=draw_device)
    candidates = torch.arange(vocab_size, device=draw_device)
    candidates = candidates[~torch.isin(candidates, special)]
    if candidates.numel() == 0:
        raise ValueError(f"no non-special id in a vocabulary of {vocab_size}")

    # Always the same three draws of the same shape: reproducible for a seed.
    select_draw = torch.rand(ids.shape, generator=generator, device=draw_device)
    action_draw = torch.rand(ids.shape, generator=generator, device=draw_device)
    random_index = torch.randint(
        candidates.numel(), ids.shape, generator=generator, device=draw_device
    )
    select_draw, action_draw = select_draw.to(ids.device), action_draw.to(ids.device)
    random_ids = candidates[random_index].to(ids.device, ids.dtype)

    maskable = attention_mask.bool() & ~torch.isin(ids, special.to(ids.device))
    selected = maskable & (select_draw < ratio)
    to_mask = selected & (action_draw < mask_fraction)
    to_random = selected & (action_draw >= mask_fraction)
    to_random &= action_draw < mask_fraction + random_fraction
    masked = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return MaskedTokens(masked, labels)
