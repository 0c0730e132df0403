"""Hugging Face ``datasets`` saved with ``save_to_disk``.

Images may be an ``Image`` feature (embedded bytes or a path) or a plain path
column. The feature is read undecoded so that our guards, not ``datasets``,
decide what a bad image is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from vlp.datamodules.formats.decode import MAX_PIXELS, ImageSource
from vlp.datamodules.formats.fields import parse_entry, require_fields
from vlp.datamodules.formats.sample import RawSample, merge
from vlp.datamodules.formats.source import RecordSource
from vlp.datamodules.records import BadSampleError


@dataclass(frozen=True)
class _Columns:
    image: str
    caption: str
    image_id: str
    label: str
    meta: str


class HFDiskDataset(RecordSource):
    """One record per image: rows sharing an image id are grouped.

    Without an id column, rows with the same image path are grouped; embedded
    images without one are one record per row.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = None,
        image_column: str = "image",
        caption_column: str = "caption",
        image_id_column: str = "image_id",
        label_column: str = "label",
        meta_column: str = "meta",
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.path = str(path)
        table = _select_split(datasets.load_from_disk(self.path), split, self.path)
        required = {"image": image_column, "caption": caption_column}
        require_fields(self.path, required, table.column_names)
        if isinstance(table.features[image_column], datasets.Image):
            table = table.cast_column(image_column, datasets.Image(decode=False))
        columns = _Columns(image_column, caption_column, image_id_column, label_column, meta_column)
        where = f"{self.path}:{split}" if split else self.path
        super().__init__(
            _Groups(table, _group(table, columns), columns, where), on_error, max_pixels
        )


def _select_split(
    loaded: datasets.Dataset | datasets.DatasetDict, split: str | None, path: str
) -> datasets.Dataset:
    if not isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            raise ValueError(f"{path}: split={split!r} given, but it holds a single Dataset")
        return loaded
    if split is None and len(loaded) == 1:
        split = next(iter(loaded))
    if split not in loaded:
        raise ValueError(f"{path}: choose a split; splits found: {sorted(loaded)}")
    return loaded[split]


def _group(table: datasets.Dataset, columns: _Columns) -> list[list[int]]:
    """Row indices per image, in first-seen order; reads only small columns."""
    if columns.image_id in table.column_names:
        group_keys: list[Any] = list(table[columns.image_id])
    elif isinstance(table.features[columns.image], datasets.Value):
        group_keys = list(table[columns.image])  # image paths
    else:
        return [[row] for row in range(len(table))]
    groups: dict[Any, list[int]] = {}
    for row, value in enumerate(group_keys):
        groups.setdefault(("row", row) if value in (None, "") else value, []).append(row)
    return list(groups.values())


class _Groups(Sequence):
    """The dataset's images as ``RawSample``s, read from the table on access."""

    def __init__(
        self, table: datasets.Dataset, groups: list[list[int]], columns: _Columns, where: str
    ) -> None:
        self.table, self.groups, self.columns, self.where = table, groups, columns, where

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> RawSample | BadSampleError:
        rows = self.table[self.groups[index]]
        samples = [self._row(rows, i, row) for i, row in enumerate(self.groups[index])]
        bad = next((s for s in samples if isinstance(s, BadSampleError)), None)
        return bad or merge(samples)

    def _row(self, rows: dict[str, list], i: int, row: int) -> RawSample | BadSampleError:
        def value(column: str) -> object:
            return rows[column][i] if column in rows else None

        key = f"{self.where}[{row}]"
        image = _image_source(value(self.columns.image))
        if image is None:
            return BadSampleError("missing", key, f"no image in column {self.columns.image!r}")
        return parse_entry(
            image,
            value(self.columns.caption),
            image_id=value(self.columns.image_id),
            label=value(self.columns.label),
            meta=value(self.columns.meta),
            id_fallback=image if isinstance(image, str) else key,
            key=key,
            where=key,
        )


def _image_source(value: object) -> ImageSource | None:
    """Bytes or a path from an undecoded ``Image`` cell or a path string."""
    if isinstance(value, dict):
        return value.get("bytes") or value.get("path")
    return value if isinstance(value, str) and value else None
