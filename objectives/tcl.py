"""TCL: triple contrastive learning (Yang et al., CVPR 2022), on top of ALBEF's ITC.

Besides CMA (momentum-distilled ITC, ``objectives/momentum.py``) TCL adds

* IMC, intra-modal contrast against the same momentum keys and queues, with
  hard targets y:  L_i2i = H(y, softmax(⟨v_i, K_v⟩/τ)),  L_t2t = H(y, softmax(⟨w_i, K_w⟩/τ));
* LMI, local mutual information between an online global vector g_i and the
  momentum model's local vectors l_{i,m} (pooled patch regions; non-pad
  tokens after [CLS]):

      ℓ_{i,m} = −log  exp(⟨g_i,l_{i,m}⟩/τ) / ( exp(⟨g_i,l_{i,m}⟩/τ) + Σ_{j≠i} Σ_{m'} exp(⟨g_i,l_{j,m'}⟩/τ) )

  averaged over regions and samples for images, over each caption's real
  tokens then samples for text.

As in the released code the loss is the mean of the six terms
(``shared/specs/tcl_albef.md`` §6); switched-off terms leave the mean. The paper writes
the total as the sum CMA + IMC + LMI, each the mean of its two terms
(``weighting: sum_of_three``), which keeps CMA at the weight ALBEF's ITC has.
Local vectors carry no gradient, so they are gathered from every rank as
negatives and 2-process DDP matches 1 process on the same global batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp.distributed import global_mean
from vlp.objectives.contrastive import soft_cross_entropy
from vlp.objectives.momentum import CrossModal, MomentumContrastive
from vlp.step import Step


def local_infonce(
    global_vectors: Tensor,
    local_vectors: Tensor,
    local_mask: Tensor,
    all_local_vectors: Tensor,
    all_local_mask: Tensor,
    offset: int,
    temperature: Tensor,
    per_sample_mean: bool,
) -> Tensor:
    """TCL's global-to-local InfoNCE for this rank's rows.

    Args:
        global_vectors: g, ``[B, D]``, with gradient.
        local_vectors: l of this rank, ``[B, M, D]``; ``local_mask`` ``[B, M]`` marks real ones.
        all_local_vectors, all_local_mask: every rank's, ``[N, M, D]`` / ``[N, M]``
            (this rank's rows start at ``offset``); the negatives.
        per_sample_mean: average each sample's real positions first (text), or
            all positions at once (image regions).
    """
    positives = torch.einsum("bd,bmd->bm", global_vectors, local_vectors) / temperature
    scores = torch.einsum("bd,nmd->bnm", global_vectors, all_local_vectors) / temperature
    rows = torch.arange(global_vectors.shape[0], device=scores.device)
    is_negative = all_local_mask.bool()[None].expand_as(scores).clone()
    is_negative[rows, rows + offset] = False  # other samples only
    negatives = scores.masked_fill(~is_negative, float("-inf")).flatten(1).logsumexp(-1)
    losses = -(positives - torch.logaddexp(positives, negatives[:, None]))  # [B, M]
    mask = local_mask.to(losses.dtype)
    if per_sample_mean:
        per_sample = (losses * mask).sum(1) / mask.sum(1).clamp_min(1)
        return global_mean(per_sample.sum(), per_sample.shape[0])
    return global_mean((losses * mask).sum(), mask.sum())


def pooled_regions(tokens: Tensor, regions_per_side: int) -> Tensor:
    """Patch tokens ``[B, N, D]`` on a square grid, average-pooled to ``regions_per_side²`` regions."""
    side = int(tokens.shape[1] ** 0.5)
    if side * side != tokens.shape[1]:
        raise ValueError(f"LMI needs a square patch grid, got {tokens.shape[1]} tokens")
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    pooled = F.adaptive_avg_pool2d(grid, regions_per_side)
    return pooled.flatten(2).transpose(1, 2)


class TripleContrastive(MomentumContrastive):
    """CMA + IMC + LMI, each switchable for ablations.

    Args:
        imc: add the intra-modal terms L_i2i and L_t2t.
        lmi: add the local mutual-information terms for image and text.
        lmi_regions_per_side: pooled regions per side of the patch grid (TCL: 4, 16 regions).
        momentum_view, momentum_dropout: TCL's defaults feed the momentum image
            branch the second view and keep dropout in the momentum text encoder.
        weighting: ``mean_of_six``, the released code's mean of the switched-on terms, or
            ``sum_of_three``, the paper's CMA + IMC + LMI, each the mean of its two terms.
        **kwargs: the arguments of :class:`MomentumContrastive`.
    """

    name = "tcl"

    def __init__(
        self,
        imc: bool = True,
        lmi: bool = True,
        lmi_regions_per_side: int = 4,
        momentum_view: str = "images_aug",
        momentum_dropout: bool = True,
        weighting: Literal["mean_of_six", "sum_of_three"] = "mean_of_six",
        **kwargs: Any,
    ) -> None:
        super().__init__(momentum_view=momentum_view, momentum_dropout=momentum_dropout, **kwargs)
        if weighting not in ("mean_of_six", "sum_of_three"):
            raise ValueError(f"tcl weighting: mean_of_six or sum_of_three, got {weighting!r}")
        self.weighting = weighting
        self.imc = imc
        self.lmi = lmi
        self.lmi_regions_per_side = lmi_regions_per_side

    def intra_modal_terms(self, cm: CrossModal) -> dict[str, Tensor]:
        tau = cm.temperature
        return {
            "i2i": soft_cross_entropy(cm.image @ cm.image_keys.T / tau, cm.targets),
            "t2t": soft_cross_entropy(cm.text @ cm.text_keys.T / tau, cm.targets),
        }

    @torch.no_grad()
    def local_vectors(self, step: Step) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Momentum image regions and text tokens, projected and normalised (not after pooling)."""
        image_tokens = step.teacher_image(self.vision_teacher, self.momentum_view).tokens
        image = pooled_regions(
            F.normalize(self.image_proj_m(image_tokens).float(), dim=-1), self.lmi_regions_per_side
        )
        text_encoding = step.teacher_text(self.text_teacher)
        text = F.normalize(self.text_proj_m(text_encoding.tokens[:, 1:]).float(), dim=-1)
        text_mask = text_encoding.token_mask[:, 1:]
        return image, torch.ones(image.shape[:2], device=image.device), text, text_mask

    def local_terms(self, step: Step, cm: CrossModal) -> dict[str, Tensor]:
        image, image_mask, text, text_mask = self.local_vectors(step)
        length = step.encoders.text.tokenize.max_length  # pad so every rank gathers one shape
        text = F.pad(text, (0, 0, 0, length - text.shape[1]))
        text_mask = F.pad(text_mask, (0, length - text_mask.shape[1]))
        gather = step.gather_no_grad
        offset = cm.batch_offset
        return {
            "lmi_image": local_infonce(
                cm.image, image, image_mask, gather(image), gather(image_mask), offset,
                cm.temperature, per_sample_mean=False,
            ),
            "lmi_text": local_infonce(
                cm.text, text, text_mask, gather(text), gather(text_mask), offset,
                cm.temperature, per_sample_mean=True,
            ),
        }  # fmt: skip

    def forward(self, step: Step) -> dict[str, Tensor]:
        cm = self.cross_modal(step)
        terms = self.distilled_terms(step, cm)
        pairs = [(terms["i2t"], terms["t2i"])]  # CMA
        if self.imc:
            terms |= self.intra_modal_terms(cm)
            pairs.append((terms["i2i"], terms["t2t"]))
        if self.lmi:
            terms |= self.local_terms(step, cm)
            pairs.append((terms["lmi_image"], terms["lmi_text"]))
        self.enqueue(cm)
        if self.weighting == "sum_of_three":
            total = sum((a + b) / 2 for a, b in pairs)
        else:  # the mean of every switched-on term
            switched_on = [term for pair in pairs for term in pair]
            total = sum(switched_on) / len(switched_on)
        return {"contrastive_loss": total, **terms}
