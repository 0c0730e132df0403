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

data2vec (``shared/specs/data2vec_ptuning.md`` §A.3) adds two recipes, each a
frozen dataclass that an objective lists in its ``needs`` so that the data
module draws the mask while it builds the batch: BEiT's block-wise masking of
the image patch grid (:class:`BlockMasking`) and span masking of captions
(:class:`SpanMasking`; spans of 1 with 80/10/10 replacement is BERT's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
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
    span: int = 1,
) -> MaskedTokens:
    """BERT's 80/10/10 token masking, optionally of spans.

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
        span: each maskable position starts a span of this many positions with
            probability ``ratio / span`` (wav2vec 2.0 / data2vec style; overlaps
            make the selected share a little lower than ``ratio``); only
            maskable positions of a span are selected. 1 is BERT's selection.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise ValueError(
            f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) "
            "must be non-negative and sum to at most 1"
        )
    if span < 1:
        raise ValueError(f"span must be at least 1, got {span}")
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
    selected = maskable & _spans(select_draw < ratio / span, span)
    to_mask = selected & (action_draw < mask_fraction)
    to_random = selected & (action_draw >= mask_fraction)
    to_random &= action_draw < mask_fraction + random_fraction
    masked = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return MaskedTokens(masked, labels)


def _spans(starts: Tensor, span: int) -> Tensor:
    """[B, L] bool: True at every position within ``span`` positions after a start."""
    if span == 1:
        return starts
    padded = F.pad(starts[:, None].float(), (span - 1, 0))
    return F.max_pool1d(padded, span, stride=1)[:, 0].bool()


@dataclass(frozen=True)
class SpanMasking:
    """How data2vec masks captions; the student sees [MASK] (its learned mask embedding).

    The released text config masks spans of 4 tokens with probability 0.35,
    all replaced by [MASK] (the defaults); the paper's BERT variant is
    ``ratio=0.15, span=1, mask_fraction=0.8, random_fraction=0.1``.
    """

    special_ids: tuple[int, ...]
    mask_id: int
    vocab_size: int
    ratio: float = 0.35
    span: int = 4
    mask_fraction: float = 1.0
    random_fraction: float = 0.0

    #: the batch fields it produces: the student's ids, and where to predict
    fields: ClassVar[tuple[str, ...]] = ("masked_text_ids", "text_mask_positions")

    def __call__(
        self, ids: Tensor, attention_mask: Tensor, generator: torch.Generator
    ) -> MaskedTokens:
        return mask_tokens(
            ids,
            attention_mask,
            self.special_ids,
            self.mask_id,
            self.vocab_size,
            self.ratio,
            generator,
            self.mask_fraction,
            self.random_fraction,
            self.span,
        )


@dataclass(frozen=True)
class BlockMasking:
    """BEiT's block-wise masking of a ``grid`` of image patches (BEiT §2.5; data2vec §4.1).

    Rectangular blocks of at least ``min_block`` patches with aspect ratio
    log-uniform in [``min_aspect``, 1/``min_aspect``] are placed until
    ``ratio`` of the patches are masked (or no block fits; then fewer).
    data2vec masks 60 % of 14×14 patches with blocks ≥ 16 (spec §A.3).
    """

    grid: tuple[int, int]
    ratio: float = 0.6
    min_block: int = 16
    max_block: int | None = None
    min_aspect: float = 0.3

    #: the batch field it produces, [B, H·W] bool
    fields: ClassVar[tuple[str, ...]] = ("image_mask",)

    def __call__(self, generator: torch.Generator) -> Tensor:
        """[H·W] bool, True at masked patches, row-major like the patch tokens."""
        height, width = self.grid
        num_masked = round(self.ratio * height * width)
        return block_mask(
            self.grid,
            num_masked,
            self.min_block,
            num_masked if self.max_block is None else self.max_block,
            self.min_aspect,
            generator,
        ).flatten()


def block_mask(
    grid: tuple[int, int],
    num_masked: int,
    min_block: int,
    max_block: int,
    min_aspect: float,
    generator: torch.Generator,
) -> Tensor:
    """[H, W] bool with up to ``num_masked`` True patches, placed block by block."""
    mask = torch.zeros(grid, dtype=torch.bool)
    count = 0
    while count < num_masked:
        added = _add_block(
            mask, min(max_block, num_masked - count), min_block, min_aspect, generator
        )
        if added == 0:
            break
        count += added
    return mask


def _add_block(
    mask: Tensor, max_new: int, min_block: int, min_aspect: float, generator: torch.Generator
) -> int:
    """Mask one random block adding 1..``max_new`` patches; BEiT gives up after 10 tries."""
    height, width = mask.shape
    log_aspect = math.log(min_aspect), math.log(1 / min_aspect)
    for _ in range(10):
        area, aspect, top, left = torch.rand(4, generator=generator).tolist()
        area = min_block + area * (max_new - min_block)
        aspect = math.exp(log_aspect[0] + aspect * (log_aspect[1] - log_aspect[0]))
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if h >= height or w >= width:
            continue
        top, left = int(top * (height - h + 1)), int(left * (width - w + 1))
        block = mask[top : top + h, left : left + w]
        new = h * w - int(block.sum())
        if 0 < new <= max_new:
            block.fill_(True)
            return new
    return 0
