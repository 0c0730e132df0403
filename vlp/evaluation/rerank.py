"""ITM re-ranked retrieval (ALBEF §4 "inference", spec §7 pitfall 9).

For each image the k texts with the highest contrastive score are re-scored
by the ITM head through the fusion encoder, and likewise the k images of each
text; everything outside the top k keeps its contrastive order but ranks below
every re-scored entry. Recall is then read exactly as in ``retrieval.py``.

Candidates tied at the k-th contrastive score are chosen as ``retrieval.py`` reads ties,
against the query: wrong candidates first, then the lower index. The chosen pairs then
depend on the scores alone, the same on any device (``topk``'s choice among ties is not).

Memory: the fusion encoder needs token states, so an evaluation epoch keeps
every image's and caption's last-layer tokens, gathered onto every rank:
``(N_images·N_patches + N_texts·L)·D`` elements in the encoders' dtype. For
the 5k COCO test split with ViT-B/16 at 256 px and L = 30 that is
5,000·257·768 + 25,000·30·768 ≈ 1.6·10⁹ elements, 6.2 GB in fp32 (3.1 GB in
bf16); the synthetic benchmark needs a few MB. ``rerank_k: 0`` on the ITM
objective turns this off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import gather_fields, gather_no_grad, world
from vlp.encoding import Encoding
from vlp.evaluation.retrieval import retrieval_recall

#: scores for pairs (image_index[p], text_index[p]); higher means a better match
PairScorer = Callable[[Tensor, Tensor], Tensor]


def top_candidates(scores: Tensor, match: Tensor, k: int) -> Tensor:
    """``[Q, k]`` indices of each query's k best candidates (``scores``, ``match``:
    ``[Q, C]``); among equal scores a wrong candidate comes first, then the lower index."""
    wrong_first = match.int().argsort(dim=1, stable=True)
    by_score = scores.gather(1, wrong_first).argsort(dim=1, descending=True, stable=True)
    return wrong_first.gather(1, by_score)[:, :k]


def reranked_scores(
    similarity: Tensor, match: Tensor, k: int, score_pairs: PairScorer
) -> tuple[Tensor, Tensor]:
    """``[I, T]`` score matrices for image→text and for text→image ranking.

    In the first, row i holds the re-scored top-k texts of image i; in the
    second, column t holds the re-scored top-k images of text t. Each pair is
    scored once even when it is a candidate in both directions. ``match`` [I, T]:
    whether text t describes image i (:func:`top_candidates` breaks ties with it).
    """
    num_images, num_texts = similarity.shape
    rows = torch.arange(num_images, device=similarity.device)
    columns = torch.arange(num_texts, device=similarity.device)
    i2t_texts = top_candidates(similarity, match, min(k, num_texts))  # [I, k]
    t2i_images = top_candidates(similarity.T, match.T, min(k, num_images)).T  # [k, T]
    i2t_pairs = (rows[:, None] * num_texts + i2t_texts).flatten()
    t2i_pairs = (t2i_images * num_texts + columns[None, :]).flatten()
    unique, inverse = torch.cat([i2t_pairs, t2i_pairs]).unique(return_inverse=True)
    scores = score_pairs(unique // num_texts, unique % num_texts).float()
    if scores.numel() == 0:
        return similarity.float(), similarity.float()
    below = similarity.float() - (similarity.max().float() - scores.min() + 1)
    i2t, t2i = below.clone().flatten(), below.clone().flatten()
    i2t[i2t_pairs] = scores[inverse[: i2t_pairs.numel()]]
    t2i[t2i_pairs] = scores[inverse[i2t_pairs.numel() :]]
    return i2t.view_as(similarity), t2i.view_as(similarity)


def itm_reranked_recall(
    similarity: Tensor,
    image_ids: Tensor,
    text_image_ids: Tensor,
    k: int,
    score_pairs: PairScorer,
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """``i2t_r{K}``/``t2i_r{K}`` after re-scoring each query's top-k candidates."""
    match = image_ids[:, None] == text_image_ids[None, :]
    i2t, t2i = reranked_scores(similarity, match, k, score_pairs)
    i2t_metrics = retrieval_recall(i2t, image_ids, text_image_ids, ks)
    t2i_metrics = retrieval_recall(t2i, image_ids, text_image_ids, ks)
    return {
        name: (i2t_metrics if name.startswith("i2t") else t2i_metrics)[name] for name in i2t_metrics
    }


class TokenStore:
    """The image and text token states of one evaluation epoch, for :func:`fusion_scorer`."""

    def __init__(self) -> None:
        self._images: list[Tensor] = []
        self._texts: list[Tensor] = []
        self._masks: list[Tensor] = []

    def __len__(self) -> int:
        return len(self._images)

    def add(self, image: Encoding, text: Encoding) -> None:
        self._images.append(image.tokens)
        self._texts.append(text.tokens)
        self._masks.append(text.token_mask)

    def gathered(self, device: torch.device | None = None) -> tuple[Encoding, Encoding]:
        """Every rank's images and texts in rank order (as the embeddings), texts padded alike.

        A rank that stored nothing (no evaluation batch) still joins the gathers;
        ``device`` holds its empty share (default: the stored tensors').
        """
        device = self._images[0].device if self._images else device
        local = max((t.shape[1] for t in self._texts), default=0)
        length = int(gather_no_grad(torch.tensor([local], device=device)).max())
        fields = {}
        if self._images:
            fields = {
                "images": torch.cat(self._images),
                "texts": torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t in self._texts]),
                "masks": torch.cat([F.pad(m, (0, length - m.shape[1])) for m in self._masks]),
            }
        gathered = gather_fields(fields, device)
        images, texts, masks = gathered["images"], gathered["texts"], gathered["masks"]
        return (
            Encoding(pooled=images[:, 0], tokens=images),
            Encoding(pooled=texts[:, 0], tokens=texts, mask=masks),
        )


def fusion_scorer(
    fusion: nn.Module,
    match_logit: Callable[[Encoding], Tensor],
    images: Encoding,
    texts: Encoding,
    chunk_size: int = 256,
) -> PairScorer:
    """Scores pairs by ``match_logit(fusion(text, image))``.

    Each rank scores a contiguous share of the pairs and the shares are
    gathered in rank order, so every rank returns all scores; the pairs must
    be the same on every rank (they are: the similarity is gathered first).
    """
    dtype = next(fusion.parameters()).dtype

    def rows(encoding: Encoding, index: Tensor) -> Encoding:
        tokens = encoding.tokens[index].to(dtype)
        mask = None if encoding.mask is None else encoding.mask[index]
        return Encoding(pooled=tokens[:, 0], tokens=tokens, mask=mask)

    @torch.no_grad()
    def score(image_index: Tensor, text_index: Tensor) -> Tensor:
        rank, world_size = world()
        share = torch.arange(image_index.numel(), device=image_index.device)
        share = share.tensor_split(world_size)[rank]
        local = [image_index.new_zeros(0, dtype=torch.float32)]
        for part in share.split(chunk_size):
            fused = fusion(rows(texts, text_index[part]), rows(images, image_index[part]))
            local.append(match_logit(fused).float())
        return gather_no_grad(torch.cat(local))

    return score
