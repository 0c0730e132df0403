"""``vlp data``: write the embedded synthetic data to disk in any supported format.

    vlp data --out data/scenes --format jsonl --train 4000 --val 500 --test 1000
    vlp data --out data/clips --media clips --format webdataset --num_frames 8
    vlp data --out data/documents --media documents --format obelics

Each split goes to ``OUT/<split>/``. For scenes, ``OUT/classes.json`` records the
zero-shot class names and prompt templates (``data.classes_file`` reads it).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from jsonargparse import auto_cli
from rich.progress import track
from torch.utils.data import Dataset

from vlp.datamodules.formats.clip_writers import CLIP_FORMATS, write_clips
from vlp.datamodules.formats.document_writers import DOCUMENT_FORMATS, write_documents
from vlp.datamodules.formats.writers import FORMATS, write_records
from vlp.datamodules.synthetic import CLASS_NAMES, PROMPT_TEMPLATES, SyntheticScenes
from vlp.datamodules.synthetic.media_text import SyntheticClips, SyntheticDocuments

CLASSES_FILE = "classes.json"
# media: the formats it can be written in
MEDIA = {"scenes": FORMATS, "clips": CLIP_FORMATS, "documents": DOCUMENT_FORMATS}


def write_synthetic(
    out: Path,
    format: str = "jsonl",
    media: str = "scenes",
    train: int = 4000,
    val: int = 500,
    test: int = 1000,
    seed: int = 0,
    image_size: int = 64,
    captions_per_image: int = 5,
    num_frames: int = 8,
    codec: str = "ffv1",
    shard_size: int = 1000,
) -> dict[str, Path]:
    """Write the train/val/test splits; returns the path each split's reader takes.

    Args:
        out: destination folder.
        format: scenes: one of jsonl, csv, coco, karpathy, hf, webdataset; clips: jsonl
            (a manifest of video files) or webdataset (video2dataset shards); documents:
            obelics or mmc4 (JSONL with PNG images).
        media: ``scenes`` (images with captions), ``clips`` (an object moving) or
            ``documents`` (interleaved scenes and sentences, for Flamingo).
        train, val, test: number of images, clips or documents per split.
        seed: generator seed (the same seed always gives the same data).
        image_size: image or frame side in pixels.
        captions_per_image: captions written for every image (scenes).
        num_frames: frames per clip, one second each (clips).
        codec: clips' video codec: ffv1 (lossless), libx264 or mjpeg.
        shard_size: images, clips or document images per shard / sub-folder.
    """
    if media not in MEDIA:
        raise ValueError(f"--media {media!r}: choose one of {', '.join(MEDIA)}")
    if format not in MEDIA[media]:
        raise ValueError(f"--format {format!r}: {media} are written as {', '.join(MEDIA[media])}")
    written = {}
    for split, count in (("train", train), ("val", val), ("test", test)):
        if media == "scenes":
            source: Dataset = SyntheticScenes(
                split,
                count,
                seed=seed,
                image_size=image_size,
                captions_per_image=captions_per_image,
            )
            write = partial(write_records, fmt=format, shard_size=shard_size)
        elif media == "clips":
            source = SyntheticClips(split, count, seed, num_frames, image_size)
            write = partial(write_clips, fmt=format, codec=codec, fps=1, shard_size=shard_size)
        else:
            source = SyntheticDocuments(split, count, seed, image_size)
            write = partial(write_documents, fmt=format, shard_size=shard_size)
        records = (source[i] for i in track(range(len(source)), description=f"writing {split}"))
        written[split] = write(records, Path(out) / split)
        print(f"{split}: {count} {media} -> {written[split]}")
    if media == "scenes":
        classes = {"class_names": list(CLASS_NAMES), "prompt_templates": list(PROMPT_TEMPLATES)}
        (Path(out) / CLASSES_FILE).write_text(json.dumps(classes, indent=2))
    return written


def main(args: list[str] | None = None) -> None:
    auto_cli(write_synthetic, args=args, as_positional=False)
