"""Flamingo's training loss: next-token NLL of text given the images before it (Flamingo eq. 1).

Label rules follow OpenFlamingo's training loop (spec §4.2): ``-100`` marks tokens that
are not predicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp.distributed import global_mean

IGNORE = -100


def flamingo_labels(
    input_ids: Tensor,
    attention_mask: Tensor,
    image_token_id: int,
    end_of_chunk_token_id: int,
    interleaved: bool,
) -> Tensor:
    """Targets for ``input_ids`` [B, L]: the ids, with untrainable positions set to -100.

    Always masked: padding (from ``attention_mask``, so a pad token equal to EOS does not
    hide EOS) and ``<image>`` tokens. For interleaved documents also: text before the first
    image (it sees no image; the LM is frozen), and each span after an ``<|endofchunk|>``
    up to the next ``<image>`` (text not about the coming image; this masks a document's
    final EOS). ``<|endofchunk|>`` itself stays a target.
    """
    is_image = input_ids == image_token_id
    masked = (attention_mask == 0) | is_image
    if interleaved:
        last_end_of_chunk = _last_position(input_ids == end_of_chunk_token_id, strict=True)
        masked |= is_image.cumsum(dim=-1) == 0  # before the first image
        masked |= last_end_of_chunk > _last_position(is_image, strict=False)  # <EOC> … <image>
    return input_ids.masked_fill(masked, IGNORE)


def predicting_positions(labels: Tensor) -> Tensor:
    """[B, L] True where the next token is a target: the only positions whose logits
    ``lm_loss`` reads (``FlamingoLM(..., predict_at=...)`` computes just those)."""
    return F.pad(labels[:, 1:] != IGNORE, (0, 1), value=False)


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean NLL of each target given the tokens before it; 0 (with a graph) if none.

    ``logits`` are [B, L, V] at every position, or [M, V] at the ``predicting_positions``
    only, in row-major order. The mean is over the targets of the global batch (every
    rank's), so DDP gives the same gradient as one process on the whole batch.
    """
    targets = labels[:, 1:]
    is_target = targets != IGNORE
    predicted = logits[:, :-1][is_target] if logits.dim() == 3 else logits
    total = F.cross_entropy(predicted, targets[is_target], reduction="sum")
    return global_mean(total, is_target.sum())


def _last_position(flags: Tensor, strict: bool) -> Tensor:
    """Per position, the index of the last flagged position at or (``strict``) before it; -1 if none."""
    positions = torch.arange(flags.shape[-1], device=flags.device).expand_as(flags)
    last = torch.where(flags, positions, -1).cummax(dim=-1).values
    return F.pad(last[..., :-1], (1, 0), value=-1) if strict else last
