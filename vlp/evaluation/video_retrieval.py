"""Zero-shot video–text retrieval with an image–text model (CLIP4Clip's mean pooling).

A clip's embedding is the mean of its frames' normalised image embeddings, normalised
again (Luo et al. 2021, "meanP" without training); its captions are embedded as any
text. Recall is read as for images (``retrieval.py``, ties against the query) and named
``video_retrieval/{v2t,t2v}_r{K}``. The frames' order plays no part, so a caption that
only a clip's motion tells apart (the embedded clips' direction) cannot be retrieved
above its reversal: the metric measures what the frames show, not how they move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp.evaluation.retrieval import retrieval_recall


def mean_pooled(frame_embeddings: Tensor) -> Tensor:
    """[B, F, D] normalised frame embeddings → [B, D] normalised clip embeddings."""
    return F.normalize(frame_embeddings.mean(dim=1), dim=-1)


def video_retrieval_recall(
    clip_embeddings: Tensor,
    clip_ids: Tensor,
    text_embeddings: Tensor,
    text_clip_ids: Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """``v2t_r{K}``/``t2v_r{K}``: each clip once, however many of its captions came as
    records of their own (their embeddings are the clip's, as its frames are)."""
    ids, first = _first_of_each(clip_ids)
    similarity = clip_embeddings[first] @ text_embeddings.T
    recall = retrieval_recall(similarity, ids, text_clip_ids, ks)
    return {name.replace("i2t", "v2t").replace("t2i", "t2v"): v for name, v in recall.items()}


def _first_of_each(ids: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct ``ids`` and the position of each one's first occurrence."""
    distinct, inverse = ids.unique(return_inverse=True)
    positions = torch.arange(ids.numel(), device=ids.device)
    first = torch.full_like(distinct, ids.numel()).scatter_reduce(0, inverse, positions, "amin")
    return distinct, first
