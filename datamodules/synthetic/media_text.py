"""The embedded interleaved documents and clips as :class:`MediaTextSource` datasets."""

from __future__ import annotations

from vlp.datamodules.media_text import ClipSource, MediaTextRecord, MediaTextSource
from vlp.datamodules.synthetic.clips import make_clip
from vlp.datamodules.synthetic.dataset import SPLITS
from vlp.datamodules.synthetic.generate import STREAMS, SceneKnobs
from vlp.datamodules.synthetic.interleaved import make_interleaved_document

_SPLIT_STRIDE = 10**9  # item i of a split is generated as index split_code · stride + i


class _SyntheticSplit(MediaTextSource):
    def __init__(self, split: str, size: int, seed: int) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.split = split
        self.size = size
        self.seed = seed

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        return STREAMS[self.split] * _SPLIT_STRIDE + index


class SyntheticDocuments(_SyntheticSplit):
    """Documents of 2 to ``max_scenes`` scenes, each image placed before the sentence about
    it (as MMC4's matching places them), so predicting a sentence needs the right image.

    Args:
        max_scenes: most scenes per document. A language model trained from scratch only
            learns the positions its documents reach: to prompt it with k demonstrations,
            documents need k + 1 scenes.
        question_fraction: share of scenes whose text is a question about the image and
            its answer in the VQA prompts' layout instead of a sentence (teaches a
            from-scratch LM the format; 0 for a pretrained LM, which knows it).
    """

    def __init__(
        self,
        split: str = "train",
        num_documents: int = 500,
        seed: int = 0,
        image_size: int = SceneKnobs.image_size,
        max_scenes: int = 5,
        question_fraction: float = 0.0,
    ) -> None:
        super().__init__(split, num_documents, seed)
        self.knobs = SceneKnobs(image_size=image_size, captions_per_image=1)
        self.max_scenes = max_scenes
        self.question_fraction = question_fraction

    def __getitem__(self, index: int) -> MediaTextRecord:
        chunks = make_interleaved_document(
            self.seed,
            self._index(index),
            knobs=self.knobs,
            question_fraction=self.question_fraction,
            max_scenes=self.max_scenes,
        )
        segments = tuple(part for text, image in chunks for part in ((image,), text))
        return MediaTextRecord(segments, interleaved=True, key=f"documents/{self.split}/{index}")


class SyntheticClips(_SyntheticSplit, ClipSource):
    """Clips of one object moving, each one medium of ``num_frames`` frames with its caption
    ("a red circle moving to the right"): the direction is only in the frame order."""

    def __init__(
        self,
        split: str = "train",
        num_clips: int = 500,
        seed: int = 0,
        num_frames: int = 4,
        image_size: int = SceneKnobs.image_size,
    ) -> None:
        super().__init__(split, num_clips, seed)
        self.num_frames = num_frames
        self.image_size = image_size

    def __getitem__(self, index: int) -> MediaTextRecord:
        clip = make_clip(self.seed, self._index(index), self.num_frames, self.image_size)
        segments = (tuple(clip.frames), clip.caption)
        return MediaTextRecord(segments, interleaved=False, key=f"clips/{self.split}/{index}")
