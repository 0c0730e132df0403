"""JSONL and CSV manifests: one row per (image path, caption), grouped per image.

Rows sharing an image id (or, without an id column, an image path) become one
record whose captions are positives of each other, in first-seen order.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlp.datamodules.formats.decode import MAX_PIXELS
from vlp.datamodules.formats.fields import parse_entry, require_fields
from vlp.datamodules.formats.sample import RawSample, merge
from vlp.datamodules.formats.source import RecordSource
from vlp.datamodules.records import BadSampleError

Row = tuple[str, dict[str, Any] | BadSampleError]  # (row key "file:line", fields or why unreadable)


@dataclass(frozen=True)
class _Fields:
    image: str
    caption: str
    image_id: str
    label: str
    meta: str


class _Manifest(RecordSource):
    """Shared by both manifest formats; subclasses only say how to read rows."""

    def __init__(
        self,
        path: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        image_field: str = "image",
        caption_field: str = "caption",
        image_id_field: str = "image_id",
        label_field: str = "label",
        meta_field: str = "meta",
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        fields = _Fields(image_field, caption_field, image_id_field, label_field, meta_field)
        found, rows = self.read_rows(self.path)
        require_fields(self.path, {"image": image_field, "caption": caption_field}, found)
        samples = ((key, _to_sample(row, key, fields, self.image_root)) for key, row in rows)
        super().__init__(group_rows(samples), on_error, max_pixels)

    @staticmethod
    def read_rows(path: Path) -> tuple[set[str], list[Row]]:
        """The field names seen anywhere in the file, and every row in order."""
        raise NotImplementedError


class JsonlManifest(_Manifest):
    """One JSON object per line; the caption field may hold one caption or a list."""

    @staticmethod
    def read_rows(path: Path) -> tuple[set[str], list[Row]]:
        found: set[str] = set()
        rows: list[Row] = []
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                key = f"{path}:{number}"
                # surrogateescape keeps bad bytes visible to the caption check
                # (bad_encoding) instead of failing the whole line as corrupt
                text = line.decode("utf-8-sig", errors="surrogateescape")
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as error:
                    rows.append((key, BadSampleError("corrupt", key, str(error))))
                    continue
                if not isinstance(row, dict):
                    rows.append((key, BadSampleError("bad_field", key, "row is not an object")))
                    continue
                found.update(row)
                rows.append((key, row))
        return found, rows


class CsvManifest(_Manifest):
    """A CSV file with a header row; one caption per row."""

    @staticmethod
    def read_rows(path: Path) -> tuple[set[str], list[Row]]:
        """A malformed file (a field past ``csv.field_size_limit()``, a stray NUL) raises,
        naming the line: the reader cannot tell where the next row starts."""
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
            reader = csv.DictReader(file)
            try:
                rows: list[Row] = [(f"{path}:{reader.line_num}", row) for row in reader]
            except csv.Error as error:  # DictReader's own line_num is the last good row's
                line = reader.reader.line_num
                raise ValueError(f"{path}:{line}: not readable as CSV: {error}") from error
            return set(reader.fieldnames or ()), rows


def _to_sample(
    row: dict[str, Any] | BadSampleError, key: str, fields: _Fields, image_root: Path
) -> RawSample | BadSampleError:
    if isinstance(row, BadSampleError):
        return row
    image = row.get(fields.image)
    if not isinstance(image, str) or not image:
        return BadSampleError("bad_field", key, f"{fields.image}={image!r} is not a path")
    return parse_entry(
        image_root / image,
        row.get(fields.caption),
        image_id=row.get(fields.image_id),
        label=row.get(fields.label),
        meta=row.get(fields.meta),
        id_fallback=image,
        key=str(image_root / image),
        where=key,
    )


def group_rows(
    rows: Iterable[tuple[str, RawSample | BadSampleError]],
) -> list[RawSample | BadSampleError]:
    """Merge the ``(row key, sample)`` rows of one image id, in first-seen order.

    Bad rows stay single. So does a row whose id an earlier row gave to another image,
    as a bad field: merged, one of the two images would be lost and get the other's
    captions.
    """
    groups: dict[int, tuple[str, list[RawSample]]] = {}  # id → its first row's key, its rows
    order: list[int | BadSampleError] = []
    for where, row in rows:
        if isinstance(row, BadSampleError):
            order.append(row)
        elif row.image_id not in groups:
            groups[row.image_id] = (where, [row])
            order.append(row.image_id)
        else:
            first_key, group = groups[row.image_id]
            if row.image == group[0].image:
                group.append(row)
            else:
                detail = (
                    f"image_id {row.image_id} is {group[0].image} at {first_key}, here {row.image}"
                )
                order.append(BadSampleError("bad_field", where, detail))
    return [merge(groups[entry][1]) if isinstance(entry, int) else entry for entry in order]
