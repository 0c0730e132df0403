"""The embedded captioned-scenes dataset as a map-style torch ``Dataset``."""

from __future__ import annotations

from torch.utils.data import Dataset

from vlp.datamodules.records import ImageTextRecord
from vlp.datamodules.synthetic.captions import CLASS_NAMES, PROMPT_TEMPLATES
from vlp.datamodules.synthetic.generate import STREAMS, SceneKnobs, generate_scene

SPLITS = ("train", "val", "test")
_ID_STRIDE = 10**9  # image ids are split_code * stride + index, unique across splits


class SyntheticScenes(Dataset[ImageTextRecord]):
    """Procedurally generated scenes of coloured shapes with captions.

    Item ``i`` of a split depends only on ``(seed, split, i)`` and the knobs,
    so it is generated on demand in any order, in any DataLoader worker, and
    nothing is stored. ``class_names`` and ``prompt_templates`` drive
    zero-shot classification of the main object's shape (``record.label``).
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int = 2000,
        seed: int = 0,
        image_size: int = SceneKnobs.image_size,
        max_objects: int = SceneKnobs.max_objects,
        background_noise: float = SceneKnobs.background_noise,
        captions_per_image: int = SceneKnobs.captions_per_image,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not 0 <= num_images <= _ID_STRIDE:
            raise ValueError(f"num_images must be in 0..{_ID_STRIDE}, got {num_images}")
        self.split = split
        self.num_images = num_images
        self.seed = seed
        self.knobs = SceneKnobs(image_size, max_objects, background_noise, captions_per_image)
        self.class_names = CLASS_NAMES
        self.prompt_templates = PROMPT_TEMPLATES

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> ImageTextRecord:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        code = STREAMS[self.split]
        scene = generate_scene([self.seed, code, index], self.knobs)
        return ImageTextRecord(
            image=scene.image,
            captions=scene.captions,
            image_id=code * _ID_STRIDE + index,
            label=scene.label,
            key=f"synthetic/{self.split}/{index:06d}",
            meta=scene.meta,
        )
