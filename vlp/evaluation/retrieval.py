"""Image–text retrieval recall when an image has several captions.

i2t R@K: an image counts as retrieved when ANY of its captions is among the K
texts ranked highest for it. t2i R@K: a caption counts when its own image is
among the K images ranked highest for it (the COCO/Flickr protocol).

Exact ties count against the query: a wrong candidate scoring the same as the best
true one ranks ahead of it. A rank then depends on the scores alone, not on the order
of the candidates (which under DDP is rank-major, not the dataset's), and a collapsed
model whose scores are all equal recalls nothing rather than everything.
"""

from __future__ import annotations

from torch import Tensor


def retrieval_recall(
    similarity: Tensor, image_ids: Tensor, text_image_ids: Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K in both directions.

    Args:
        similarity: ``[num_images, num_texts]`` scores, higher is more similar.
        image_ids: ``[num_images]`` id of each image (unique).
        text_image_ids: ``[num_texts]`` id of the image each text describes.
    """
    if image_ids.unique().numel() != image_ids.numel():
        raise ValueError("retrieval needs each image once; image ids repeat")
    match = image_ids[:, None] == text_image_ids[None, :]  # [I, T]
    i2t_ranks = best_match_rank(similarity, match)
    t2i_ranks = best_match_rank(similarity.T, match.T)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"i2t_r{k}"] = (i2t_ranks < k).float().mean().item()
        metrics[f"t2i_r{k}"] = (t2i_ranks < k).float().mean().item()
    return metrics


def best_match_rank(scores: Tensor, match: Tensor) -> Tensor:
    """``[Q]`` 0-based rank of each query's best-scoring true candidate: the number of
    wrong candidates scoring at least as high (``scores``, ``match``: ``[Q, C]``);
    infinite for a query without a true candidate."""
    best = scores.masked_fill(~match, float("-inf")).amax(dim=1, keepdim=True)
    ranks = ((scores >= best) & ~match).sum(dim=1).float()
    return ranks.masked_fill(~match.any(dim=1), float("inf"))
