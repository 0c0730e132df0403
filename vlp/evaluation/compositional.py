"""Compositional hard-negative accuracy (ARO/SugarCrepe-style, on the embedded scenes).

Each hard negative is a true caption with its attributes or relation swapped
(``meta["hard_negatives"]`` of the synthetic scenes). The model is right on
it when it scores (image, true caption) strictly above (image, negative): by
ITC cosine (``compositional/itc_acc``) and by the ITM head
(``compositional/itm_acc``). A tie counts as wrong, so a model that ignores
word order or binding (e.g. bag-of-words pooling) cannot score above chance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vlp.encoding import Encoding

NEGATIVE_FIELDS = ("negative_ids", "negative_mask", "negative_text_index")


def image_index_of_texts(image_ids: Tensor, text_image_ids: Tensor) -> Tensor:
    """``[T]`` row of each text's image among the batch's images."""
    match = text_image_ids[:, None] == image_ids[None, :]
    if not match.any(1).all():
        raise ValueError("a caption's image is not in the batch")
    return match.float().argmax(1)


def wins(true_scores: Tensor, negative_scores: Tensor) -> Tensor:
    """1.0 where the true caption scores strictly higher than its negative, else 0.0."""
    return (true_scores > negative_scores).float()


def itc_wins(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    negative_embeddings: Tensor,
    negative_text_index: Tensor,
    text_image_index: Tensor,
) -> Tensor:
    """Per negative n: ⟨v, w_true⟩ > ⟨v, w_n⟩, with v the image of n's true caption."""
    true_text = negative_text_index
    image = image_embeddings[text_image_index[true_text]]
    true_scores = (image * text_embeddings[true_text]).sum(-1)
    negative_scores = (image * negative_embeddings).sum(-1)
    return wins(true_scores, negative_scores)


@torch.no_grad()
def compositional_outcomes(
    batch: Mapping[str, Any],
    image: Encoding,
    text: Encoding,
    embed_image: Callable[[Encoding], Tensor],
    embed_text: Callable[[Encoding], Tensor],
    text_encoder: nn.Module,
    fusion: nn.Module | None = None,
    match_logit: Callable[[Encoding], Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per hard negative of the batch, 1.0 when the model prefers the true caption.

    Returns ``compositional_itc`` and, when ITM can score pairs,
    ``compositional_itm``; both are empty when the batch has no negatives, so
    every rank stores the same names (they are gathered across ranks).
    """
    scoring_itm = fusion is not None and match_logit is not None
    names = ["compositional_itc"] + (["compositional_itm"] if scoring_itm else [])
    if any(field not in batch for field in NEGATIVE_FIELDS) or batch["negative_ids"].numel() == 0:
        return {name: image.pooled.new_zeros(0, dtype=torch.float32) for name in names}
    negative_index = batch["negative_text_index"]
    text_image_index = image_index_of_texts(batch["image_ids"], batch["text_image_ids"])
    negative = text_encoder(batch["negative_ids"], batch["negative_mask"])
    outcomes = {
        "compositional_itc": itc_wins(
            embed_image(image),
            embed_text(text),
            embed_text(negative),
            negative_index,
            text_image_index,
        )
    }
    if scoring_itm:
        # each true caption has several negatives: fuse it once
        true_texts, which = negative_index.unique(return_inverse=True)
        true_image = image.rows(text_image_index[true_texts])
        true_scores = match_logit(fusion(text.rows(true_texts), true_image))[which]
        negative_image = image.rows(text_image_index[negative_index])
        negative_scores = match_logit(fusion(negative, negative_image))
        outcomes["compositional_itm"] = wins(true_scores, negative_scores)
    return outcomes
