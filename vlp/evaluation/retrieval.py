"""Image–text retrieval recall when an image has several captions.

i2t R@K: an image counts as retrieved when ANY of its captions is among the K
texts ranked highest for it. t2i R@K: a caption counts when its own image is
among the K images ranked highest for it (the COCO/Flickr protocol).
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
    metrics: dict[str, float] = {}
    i2t_order = similarity.argsort(dim=1, descending=True)
    t2i_order = similarity.T.argsort(dim=1, descending=True)
    i2t_hits = match.gather(1, i2t_order)  # rank r of image i is a true caption
    t2i_hits = match.T.gather(1, t2i_order)
    for k in ks:
        metrics[f"i2t_r{k}"] = i2t_hits[:, :k].any(1).float().mean().item()
        metrics[f"t2i_r{k}"] = t2i_hits[:, :k].any(1).float().mean().item()
    return metrics
