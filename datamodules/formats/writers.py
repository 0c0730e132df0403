"""Write records in every format we read, so any dataset can be converted and
every reader can be tested against a known-good copy.

Images are saved as PNG (lossless: read-back pixels are identical), and ids,
labels and meta are written explicitly wherever the format has room, so each
format reads back to the same records.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets
import webdataset
from PIL import Image

from vlp.datamodules.formats.coco import CocoCaptions
from vlp.datamodules.formats.hf import HFDiskDataset
from vlp.datamodules.formats.manifest import CsvManifest, JsonlManifest
from vlp.datamodules.formats.shards import WebDatasetShards
from vlp.datamodules.records import ImageTextRecord

FORMATS = ("jsonl", "csv", "coco", "karpathy", "hf", "webdataset")


def write_records(
    records: Iterable[ImageTextRecord], out_dir: str | os.PathLike, fmt: str, shard_size: int = 1000
) -> Path:
    """Write ``records`` under ``out_dir``; return the path ``open_written`` takes.

    ``shard_size`` is the number of images per tar shard, HF shard, or image
    sub-folder, so no folder grows unboundedly.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _WRITERS[fmt](records, out, shard_size)


def open_written(
    path: str | os.PathLike, fmt: str, **kwargs: Any
) -> JsonlManifest | CsvManifest | CocoCaptions | HFDiskDataset | WebDatasetShards:
    """The source that reads what ``write_records(..., fmt)`` wrote to ``path``."""
    path = Path(path)
    if fmt in ("coco", "karpathy"):
        return CocoCaptions(path, path.parent, **kwargs)
    readers = {"jsonl": JsonlManifest, "csv": CsvManifest, "hf": HFDiskDataset}
    if fmt in readers:
        return readers[fmt](path, **kwargs)
    if fmt == "webdataset":
        return WebDatasetShards(str(path), **kwargs)
    raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def png_bytes(image: Image.Image) -> bytes:
    """Lossless: the pixels read back are the pixels written."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _saved_images(
    records: Iterable[ImageTextRecord], out: Path, shard_size: int
) -> Iterator[tuple[ImageTextRecord, str]]:
    """Save each image as a PNG; yield it with its path relative to ``out``."""
    for index, record in enumerate(records):
        relative = f"images/{index // shard_size:05d}/{index:09d}.png"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(png_bytes(record.image))
        yield record, relative


def _write_jsonl(records: Iterable[ImageTextRecord], out: Path, shard_size: int) -> Path:
    path = out / "manifest.jsonl"
    with open(path, "w", encoding="utf-8") as file:
        for record, image in _saved_images(records, out, shard_size):
            row = {
                "image": image,
                "caption": list(record.captions),
                "image_id": record.image_id,
                "label": record.label,
                "meta": record.meta,
            }
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _write_csv(records: Iterable[ImageTextRecord], out: Path, shard_size: int) -> Path:
    """One row per caption: the long format most caption CSVs use."""
    path = out / "manifest.csv"
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "caption", "image_id", "label", "meta"])
        for record, image in _saved_images(records, out, shard_size):
            meta = json.dumps(record.meta, ensure_ascii=False)
            for caption in record.captions:
                writer.writerow([image, caption, record.image_id, record.label, meta])
    return path


def _write_coco(records: Iterable[ImageTextRecord], out: Path, shard_size: int) -> Path:
    images, annotations = [], []
    for record, image in _saved_images(records, out, shard_size):
        images.append(
            {"id": record.image_id, "file_name": image, "label": record.label, "meta": record.meta}
        )
        for caption in record.captions:
            annotations.append(
                {"id": len(annotations), "image_id": record.image_id, "caption": caption}
            )
    return _dump_json({"images": images, "annotations": annotations}, out / "captions.json")


def _write_karpathy(records: Iterable[ImageTextRecord], out: Path, shard_size: int) -> Path:
    """Every image goes in split "train": records carry no split of their own."""
    images = []
    for index, (record, image) in enumerate(_saved_images(records, out, shard_size)):
        folder, filename = image.rsplit("/", 1)
        images.append(
            {
                "filepath": folder,
                "filename": filename,
                "sentences": [{"raw": caption} for caption in record.captions],
                "split": "train",
                "imgid": index,
                "cocoid": record.image_id,
                "label": record.label,
                "meta": record.meta,
            }
        )
    return _dump_json({"dataset": "vlp", "images": images}, out / "dataset.json")


def _dump_json(data: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _write_hf(records: Iterable[ImageTextRecord], out: Path, shard_size: int) -> Path:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.List(datasets.Value("string")),
            "image_id": datasets.Value("int64"),
            "label": datasets.Value("int64"),
            "meta": datasets.Value("string"),  # JSON: meta's keys differ between records
        }
    )

    def rows() -> Iterator[dict[str, Any]]:
        for record in records:
            yield {
                "image": {"bytes": png_bytes(record.image), "path": None},
                "caption": list(record.captions),
                "image_id": record.image_id,
                "label": record.label,
                "meta": json.dumps(record.meta, ensure_ascii=False),
            }

    path = out / "hf"
    # A throwaway cache: the generator is consumed once and saved, never reloaded.
    with tempfile.TemporaryDirectory() as cache:
        table = datasets.Dataset.from_generator(
            rows, features=features, cache_dir=cache, fingerprint="vlp-write-records"
        )
        table.save_to_disk(str(path), num_shards=max(1, math.ceil(len(table) / shard_size)))
    return path


def _write_webdataset(records: Iterable[ImageTextRecord], out: Path, shard_size: int) -> Path:
    """img2dataset layout: ``.png`` + first caption in ``.txt`` + everything in ``.json``."""
    pattern = str(out / "shard-%06d.tar")
    with webdataset.ShardWriter(
        pattern, maxcount=shard_size, verbose=0, encoder=False, mtime=0
    ) as sink:
        for index, record in enumerate(records):
            info = {
                "captions": list(record.captions),
                "image_id": record.image_id,
                "label": record.label,
                "meta": record.meta,
            }
            sink.write(
                {
                    "__key__": f"{index:09d}",
                    "png": png_bytes(record.image),
                    "txt": record.captions[0].encode("utf-8"),
                    "json": json.dumps(info, ensure_ascii=False).encode("utf-8"),
                }
            )
        n_shards = sink.shard
    return out / f"shard-{{000000..{n_shards - 1:06d}}}.tar"


_WRITERS: dict[str, Callable[[Iterable[ImageTextRecord], Path, int], Path]] = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "coco": _write_coco,
    "karpathy": _write_karpathy,
    "hf": _write_hf,
    "webdataset": _write_webdataset,
}
