"""ITM: image–text matching with in-batch hard negatives.

ALBEF eq. (4) and §3.2 (``shared/specs/tcl_albef.md`` §4), used unchanged by TCL:

    p^itm(I, T) = softmax(W · f(I, T)_cls)        f: the fusion encoder
    L_itm = E H(y^itm, p^itm(I, T))

over the B matching pairs (y = 1) and, for each image, one text and for each
text, one image (y = 0), each drawn with probability ∝ softmax(s / τ) of the
contrastive similarity s, so that similar-looking pairs are the negatives.
τ is the contrastive objective's current learnt τ (ALBEF divides by its ITC
``temp``, spec §4 step 2) unless a fixed one is configured.

Fixes of the reference code (spec §7, pitfall 2): every pair sharing an image
id is excluded (no false negatives from a second caption of the same image);
weights are computed in fp32 and ε is added *after* the softmax, so underflow
and non-finite scores cannot make ``multinomial`` fail; a row with no valid
candidate (batch size 1, all ids equal) simply has no negative, counted in
``no_negative``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import global_mean
from vlp.encoders import Encoders
from vlp.encoding import Encoding
from vlp.objectives.base import Objective
from vlp.step import Step

EPSILON = 1e-6  # added to every valid candidate's weight after the softmax


@torch.no_grad()
def sample_hard_negatives(
    similarity: Tensor,
    row_ids: Tensor,
    column_ids: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    generator: torch.Generator | None = None,
) -> Tensor:
    """For each row, one column drawn with probability ∝ softmax(similarity / τ) + ε.

    Columns whose id equals the row's id are never drawn. Non-finite scores get
    weight ε like any underflowed one, so a NaN row falls back to a uniform draw
    over its valid columns.

    Args:
        similarity: ``[R, C]`` scores, e.g. image × text cosine similarity.
        row_ids: ``[R]`` image id of each row.
        column_ids: ``[C]`` image id of each column; defaults to ``row_ids``.
        temperature: τ.
        generator: random source, for reproducible tests.

    Returns:
        ``[R]`` column indices (long), −1 where a row has no valid column.
    """
    column_ids = row_ids if column_ids is None else column_ids
    valid = row_ids[:, None] != column_ids[None, :]
    logits = similarity.float() / temperature
    logits = logits.masked_fill(~(valid & logits.isfinite()), float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0) + EPSILON * valid
    has_negative = valid.any(-1)
    if not has_negative.any():
        return torch.full(row_ids.shape, -1, dtype=torch.long, device=row_ids.device)
    # multinomial refuses all-zero rows; they get a dummy draw that is then discarded
    weights = torch.where(has_negative[:, None], weights, torch.ones_like(weights))
    drawn = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return torch.where(has_negative, drawn, torch.full_like(drawn, -1))


def itm_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the 2-way match logits in fp32, over the global batch's pairs (ranks
    may hold different numbers), and this rank's accuracy."""
    logits = logits.float()
    loss = global_mean(F.cross_entropy(logits, labels, reduction="sum"), labels.shape[0])
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, accuracy


class ImageTextMatching(Objective):
    """ITM head on the fusion encoder's [CLS], trained on hard in-batch negatives.

    Needs a contrastive objective (for ``step.similarity()``) and ``model.fusion``.

    Args:
        weight: weight of ``itm_loss`` in the total.
        temperature: τ of the sampling softmax; ``None`` (the default, as ALBEF)
            uses the first contrastive objective's current clamped τ, a number fixes it.
        rerank_k: candidates per query that evaluation re-scores with this head
            (``retrieval_itm/*``); 0 turns ITM re-ranking off. ALBEF uses 128/256.
    """

    name = "itm"
    needs: ClassVar[frozenset[str]] = frozenset({"images", "text", "fusion"})
    batch_negatives = True

    def __init__(
        self, weight: float = 1.0, temperature: float | None = None, rerank_k: int = 16
    ) -> None:
        super().__init__(weight)
        if temperature is not None and temperature <= 0:
            raise ValueError(f"itm temperature must be positive, got {temperature}")
        if rerank_k < 0:
            raise ValueError(f"itm rerank_k must be ≥ 0, got {rerank_k}")
        self.temperature = temperature
        self.rerank_k = rerank_k

    def bind(self, encoders: Encoders) -> None:
        if encoders.fusion is None:
            raise ValueError("itm needs the fusion encoder: set model.fusion in the config")
        self.head = nn.Linear(encoders.fusion.width, 2)  # W; class 1 = match

    def logits(self, fused: Encoding) -> Tensor:
        """``[N, 2]`` (no match, match) logits, in fp32 even under autocast."""
        pooled = fused.pooled.float()
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head(pooled)

    def match_logit(self, fused: Encoding) -> Tensor:
        """Match minus no-match logit: log-odds of p^itm, ranks pairs like ALBEF's p^itm."""
        logits = self.logits(fused)
        return logits[:, 1] - logits[:, 0]

    def sampling_temperature(self, step: Step) -> float | Tensor:
        """τ of the draws: the fixed one, or the contrastive objective's as it is now."""
        if self.temperature is not None:
            return self.temperature
        learnt = getattr(step.embedder, "temperature", None)
        if not isinstance(learnt, Tensor):
            raise ValueError(
                "itm temperature: null reuses the contrastive τ, but the embedding objective "
                "has none; set a number"
            )
        return learnt.detach()

    def forward(self, step: Step) -> dict[str, Tensor]:
        positives = step.fused()
        image, text = step.image(), step.text()
        ids = step.image_ids
        similarity = step.similarity().detach()  # [B images, B texts]
        tau = self.sampling_temperature(step)
        text_for_image = sample_hard_negatives(similarity, ids, temperature=tau)
        image_for_text = sample_hard_negatives(similarity.T, ids, temperature=tau)
        with_text = (text_for_image >= 0).nonzero().squeeze(1)
        with_image = (image_for_text >= 0).nonzero().squeeze(1)
        # pairs [image i + drawn text | text j + drawn image], fused in one pass with gradients
        text_rows = torch.cat([text_for_image[with_text], with_image])
        image_rows = torch.cat([with_text, image_for_text[with_image]])
        stand_in = text_rows.numel() == 0
        if stand_in:
            # Every rank runs the fusion stack as often as the others, since sharded (FSDP)
            # layers gather their weights collectively: a rank without negatives fuses its
            # first pair and gives it no weight.
            text_rows = image_rows = torch.zeros(1, dtype=torch.long, device=ids.device)
        negatives = self.logits(step.fuse(text.rows(text_rows), image.rows(image_rows)))
        logits = self.logits(positives)
        if not stand_in:
            logits = torch.cat([logits, negatives])
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[: positives.pooled.shape[0]] = 1
        loss, accuracy = itm_loss(logits, labels)
        if stand_in:
            loss = loss + 0.0 * negatives.sum()
        dropped = (text_for_image < 0).sum() + (image_for_text < 0).sum()
        return {"itm_loss": loss, "accuracy": accuracy, "no_negative": dropped.float()}
