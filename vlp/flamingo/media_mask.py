"""Which image each text token may cross-attend to (Flamingo §2.3, "per-image attention").

φ(i) is the 1-based index of the last ``<image>`` at or before token ``i``; 0 means no
image yet (text before the first image, left padding). Token ``i`` attends only to the
visual tokens of image φ(i); earlier images reach it through the LM's self-attention.
OpenFlamingo's ``only_attend_immediate_media=False`` lets it attend images 1..φ(i).
"""

from __future__ import annotations

import torch
from torch import Tensor


def media_index(
    input_ids: Tensor, image_token_id: int, images_before: Tensor | None = None
) -> Tensor:
    """φ for every token: ``[B, L]`` ids → ``[B, L]`` image indices (0 = none).

    ``images_before`` ([B]) counts the ``<image>`` tokens already consumed, for a chunk
    that continues a sequence (KV-cached decoding feeds one new token at a time).
    """
    index = (input_ids == image_token_id).cumsum(dim=-1)
    return index if images_before is None else index + images_before.unsqueeze(-1)


def media_attention_mask(
    index: Tensor, num_media: int, num_latents: int, only_immediate: bool = True
) -> Tensor:
    """Boolean ``[B, L, num_media · num_latents]``: True where a token may attend a visual token.

    Visual keys are laid out image by image, ``num_latents`` per image. A token whose φ
    is 0 gets an all-False row, and so does one whose φ names an image beyond
    ``num_media`` unless ``only_immediate`` is off (then it sees every image up to φ).
    """
    image_of_key = torch.arange(1, num_media + 1, device=index.device)
    image_of_key = image_of_key.repeat_interleave(num_latents)
    index = index.unsqueeze(-1)
    return index == image_of_key if only_immediate else image_of_key <= index
