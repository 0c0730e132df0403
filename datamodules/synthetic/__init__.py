"""The embedded captioned-scenes data: images, captions, hard negatives, questions, docs, clips."""

from vlp.datamodules.synthetic.captions import CLASS_NAMES, PROMPT_TEMPLATES
from vlp.datamodules.synthetic.clips import Clip, make_clip
from vlp.datamodules.synthetic.dataset import SPLITS, SyntheticScenes
from vlp.datamodules.synthetic.generate import SceneKnobs, generate_scene
from vlp.datamodules.synthetic.interleaved import make_interleaved_document
from vlp.datamodules.synthetic.scene import COLOURS, SHAPES, SIZES

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "PROMPT_TEMPLATES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Clip",
    "SceneKnobs",
    "SyntheticScenes",
    "generate_scene",
    "make_clip",
    "make_interleaved_document",
]
