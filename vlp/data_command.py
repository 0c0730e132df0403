"""``vlp data``: write the embedded synthetic scenes to disk in any supported format.

    vlp data --out data/scenes --format jsonl --train 4000 --val 500 --test 1000

Each split goes to ``OUT/<split>/`` and ``OUT/classes.json`` records the
zero-shot class names and prompt templates (``data.classes_file`` reads it).
"""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import auto_cli
from rich.progress import track

from vlp.datamodules.formats.writers import FORMATS, write_records
from vlp.datamodules.synthetic import CLASS_NAMES, PROMPT_TEMPLATES, SyntheticScenes

CLASSES_FILE = "classes.json"


def write_synthetic(
    out: Path,
    format: str = "jsonl",
    train: int = 4000,
    val: int = 500,
    test: int = 1000,
    seed: int = 0,
    image_size: int = 64,
    captions_per_image: int = 5,
    shard_size: int = 1000,
) -> dict[str, Path]:
    """Write the train/val/test splits; returns the path each split's reader takes.

    Args:
        out: destination folder.
        format: one of jsonl, csv, coco, karpathy, hf, webdataset.
        train, val, test: number of images per split.
        seed: generator seed (the same seed always gives the same data).
        image_size: image side in pixels.
        captions_per_image: captions written for every image.
        shard_size: images per shard / sub-folder.
    """
    if format not in FORMATS:
        raise ValueError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    written = {}
    for split, count in (("train", train), ("val", val), ("test", test)):
        scenes = SyntheticScenes(
            split, count, seed=seed, image_size=image_size, captions_per_image=captions_per_image
        )
        records = (scenes[i] for i in track(range(len(scenes)), description=f"writing {split}"))
        written[split] = write_records(records, Path(out) / split, format, shard_size)
        print(f"{split}: {count} images -> {written[split]}")
    classes = {"class_names": list(CLASS_NAMES), "prompt_templates": list(PROMPT_TEMPLATES)}
    (Path(out) / CLASSES_FILE).write_text(json.dumps(classes, indent=2))
    return written


def main(args: list[str] | None = None) -> None:
    auto_cli(write_synthetic, args=args, as_positional=False)
