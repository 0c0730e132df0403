"""Write interleaved documents as the JSONL layouts ``InterleavedJsonl`` reads (OBELICS,
MMC4), images as PNG files beside them: documents can be exported, and the reader can be
tested against a copy whose pixels and reading order are known.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlp.datamodules.formats.writers import png_bytes
from vlp.datamodules.media_text import MediaTextRecord

DOCUMENT_FORMATS = ("obelics", "mmc4")


def write_documents(
    records: Iterable[MediaTextRecord],
    out_dir: str | os.PathLike,
    fmt: str,
    shard_size: int = 1000,
) -> Path:
    """Write interleaved records under ``out_dir`` as ``documents.jsonl`` and
    ``images/<shard>/<n>.png`` (``shard_size`` images per folder); return the JSONL path.

    ``obelics``: aligned ``texts``/``images`` lists, any order of texts and images.
    ``mmc4``: ``text_list`` and ``image_info`` (each image before its
    ``matched_text_index`` sentence), so every image must come before some text.
    """
    if fmt not in DOCUMENT_FORMATS:
        raise ValueError(f"unknown document format {fmt!r}; choose from {DOCUMENT_FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "documents.jsonl"
    images_written = 0
    with open(path, "w", encoding="utf-8") as lines:
        for record in records:
            layout: list[str | Path] = []
            for segment in record.segments:
                if isinstance(segment, str):
                    layout.append(segment)
                    continue
                if len(segment) != 1:
                    raise ValueError(f"{record.key}: a document's media are single images")
                relative = Path(f"images/{images_written // shard_size:05d}/{images_written}.png")
                (out / relative).parent.mkdir(parents=True, exist_ok=True)
                (out / relative).write_bytes(png_bytes(segment[0]))
                images_written += 1
                layout.append(relative)
            row = _obelics_row(layout) if fmt == "obelics" else _mmc4_row(layout, record.key)
            lines.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _obelics_row(layout: list[str | Path]) -> dict[str, Any]:
    return {
        "texts": [part if isinstance(part, str) else None for part in layout],
        "images": [str(part) if isinstance(part, Path) else None for part in layout],
    }


def _mmc4_row(layout: list[str | Path], key: str) -> dict[str, Any]:
    sentences: list[str] = []
    image_info: list[dict[str, Any]] = []
    waiting: list[Path] = []  # images placed before the next sentence
    for part in layout:
        if isinstance(part, Path):
            waiting.append(part)
            continue
        image_info += [
            {"image_name": str(p), "matched_text_index": len(sentences)} for p in waiting
        ]
        waiting = []
        sentences.append(part)
    if waiting:
        raise ValueError(f"{key}: MMC4 places each image before a sentence; this one ends in one")
    return {"text_list": sentences, "image_info": image_info}
