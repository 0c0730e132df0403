"""Image transforms that never contradict a caption.

Captions name colours and left/right relations, so the defaults use no hue
jitter and no horizontal flip; crops keep most of the image so no object
named in a caption is cut away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Augment:
    """Training augmentation.

    Args:
        crop_scale: area range of the random resized crop; None resizes only.
        horizontal_flip: only for data whose captions have no left/right words.
        brightness_contrast: jitter strength for brightness and contrast (never hue).
    """

    crop_scale: tuple[float, float] | None = (0.8, 1.0)
    horizontal_flip: bool = False
    brightness_contrast: float = 0.2


@dataclass(frozen=True)
class SecondView:
    """TCL's augmentation for the second view of an image (IMC and the momentum branch).

    TCL's recipe (``shared/specs/tcl_albef.md`` §2) is a crop of 20–100% of the
    area, colour jitter 0.4/0.4/0.4/0.1 (p 0.8), grayscale (p 0.2), Gaussian
    blur σ∈[0.1, 2] (p 0.5), horizontal flip and RandAugment(2, 7). Hue
    jitter, grayscale and flips contradict captions that name colours and
    left/right, so by default they are off; ``exact_tcl()`` gives the paper's
    recipe for data whose captions allow it.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    jitter: float = 0.4  # brightness, contrast, saturation
    hue: float = 0.0
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.0
    blur_probability: float = 0.5
    horizontal_flip: bool = False
    randaugment: bool = False

    @staticmethod
    def exact_tcl() -> SecondView:
        return SecondView((0.2, 1.0), 0.4, 0.1, 0.8, 0.2, 0.5, True, True)


def second_view_transform(
    size: int, view: SecondView, mean: tuple[float, ...], std: tuple[float, ...]
) -> v2.Compose:
    jitter = v2.ColorJitter(view.jitter, view.jitter, view.jitter, view.hue)
    steps: list = [
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=view.crop_scale, antialias=True),
        v2.RandomApply([jitter], p=view.jitter_probability),
        v2.RandomGrayscale(p=view.grayscale_probability),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=view.blur_probability),
    ]
    if view.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if view.randaugment:
        steps.append(v2.RandAugment(num_ops=2, magnitude=7))
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def train_transform(
    size: int, augment: Augment, mean: tuple[float, ...], std: tuple[float, ...]
) -> v2.Compose:
    steps: list = [v2.ToImage()]
    if augment.crop_scale is None:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    else:
        steps.append(
            v2.RandomResizedCrop(size, scale=augment.crop_scale, ratio=(0.9, 1.1), antialias=True)
        )
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.brightness_contrast > 0:
        steps.append(
            v2.ColorJitter(
                brightness=augment.brightness_contrast, contrast=augment.brightness_contrast
            )
        )
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def eval_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
