"""Interleaved image–text documents from JSONL, one document per line.

Two layouts are read:

- OBELICS: ``texts`` and ``images`` are lists of one length; at each position exactly
  one of them holds a value (a text, or an image path) and the other is null.
- MMC4: ``text_list`` holds the sentences and ``image_info`` the images, each with its
  ``image_name`` and ``matched_text_index``; an image goes right before its sentence.
  Images are ordered by sentence, not by their position in ``image_info``, so the k-th
  ``<image>`` tag and the k-th image always agree (spec §4.3's ordering caveat).

Image paths are relative to ``image_root`` (default: the file's folder). Documents keep
at most ``max_media`` images (the first ones; the text from the next image on is cut).
A document with no image, with text or a path that is not valid UTF-8, or with an image
that cannot be decoded, is skipped and counted (or raises, with ``on_error="raise"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vlp.datamodules.formats.decode import MAX_PIXELS, decode_image
from vlp.datamodules.formats.sample import check_on_error, skip_or_raise
from vlp.datamodules.media_text import MediaTextRecord, MediaTextSource
from vlp.datamodules.records import BadSampleError, SkippedRecord

RawLayout = list[str | Path]  # texts, and image paths where the images stand


class InterleavedJsonl(MediaTextSource):
    """Map-style documents, parsed up front and decoded on access."""

    def __init__(
        self,
        path: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        max_media: int = 5,
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.max_media = max_media
        self.on_error = check_on_error(on_error)
        self.max_pixels = max_pixels
        self.documents: list[RawLayout | BadSampleError] = []
        with open(self.path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    self.documents.append(self._parse(line, f"{self.path}:{number}"))

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> MediaTextRecord | SkippedRecord:
        document = self.documents[index]
        key = f"{self.path}#{index}"
        try:
            if isinstance(document, BadSampleError):
                raise document
            segments = tuple(
                part if isinstance(part, str) else (decode_image(part, key, self.max_pixels),)
                for part in document
            )
        except BadSampleError as error:
            return skip_or_raise(error, self.on_error)
        return MediaTextRecord(segments, interleaved=True, key=key)

    def _parse(self, line: bytes, key: str) -> RawLayout | BadSampleError:
        # as in JsonlManifest: bad bytes in a text are the line's bad_encoding, not its
        # bad JSON, and cost only this document
        text = line.decode("utf-8-sig", errors="surrogateescape")
        try:
            row = json.loads(text)
            layout = mmc4_layout(row) if "text_list" in row else obelics_layout(row)
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as error:
            return BadSampleError("bad_field", key, f"{type(error).__name__}: {error}")
        try:
            for part in layout:
                str(part).encode("utf-8")
        except UnicodeEncodeError as error:  # undecodable bytes, or a JSON "\ud800" escape
            return BadSampleError("bad_encoding", key, str(error))
        kept: RawLayout = []
        images = 0
        for part in layout:
            if isinstance(part, Path):
                if images == self.max_media:
                    break
                images += 1
                part = self.image_root / part
            kept.append(part)
        if images == 0:
            return BadSampleError("bad_field", key, "document has no image")
        return kept


def obelics_layout(row: dict[str, Any]) -> RawLayout:
    """Aligned ``texts``/``images`` lists → the layout, in document order."""
    texts, images = row["texts"], row["images"]
    if len(texts) != len(images):
        raise ValueError(f"{len(texts)} texts but {len(images)} images")
    layout: RawLayout = []
    for text, image in zip(texts, images, strict=True):
        if (text is None) == (image is None):
            raise ValueError("each position needs exactly one of a text and an image")
        layout.append(Path(image) if text is None else str(text))
    return layout


def mmc4_layout(row: dict[str, Any]) -> RawLayout:
    """Sentences with each image placed before its matched sentence, in sentence order."""
    sentences = [str(s) for s in row["text_list"]]
    before: dict[int, list[Path]] = {}
    for info in sorted(row["image_info"], key=lambda i: int(i["matched_text_index"])):
        index = int(info["matched_text_index"])
        if not 0 <= index < len(sentences):
            raise ValueError(f"matched_text_index {index} outside {len(sentences)} sentences")
        before.setdefault(index, []).append(Path(info["image_name"]))
    return [part for i, s in enumerate(sentences) for part in (*before.get(i, []), s)]
