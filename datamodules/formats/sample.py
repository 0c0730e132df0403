"""A sample as parsed from an index, before its image and captions are decoded.

Every source splits its work the same way: parse the index (manifest rows, an
annotation file, tar members) into ``RawSample``s, then ``materialise`` one when
it is asked for. Keeping the bad-input policy in ``materialise`` means every
format skips, counts and fails fast identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vlp.datamodules.formats.decode import MAX_PIXELS, ImageSource, decode_captions, decode_image
from vlp.datamodules.records import NO_LABEL, BadSampleError, ImageTextRecord, SkippedRecord

ON_ERROR = ("skip", "raise")


@dataclass(frozen=True)
class RawSample:
    """One image's index entry: where its pixels are and its undecoded captions."""

    image: ImageSource
    captions: tuple[object, ...]  # str or bytes, checked only when materialised
    image_id: int
    key: str
    label: int = NO_LABEL
    meta: dict[str, Any] = field(default_factory=dict)


def merge(rows: Sequence[RawSample]) -> RawSample:
    """Several rows of one image as one sample: captions in row order.

    The first row decides the image and key (manifests keep a row that names another
    image out, as a bad field: ``group_rows``); a label or meta is taken from the first
    row that has one, since manifests often fill them on one row only.
    """
    first = rows[0]
    label = next((row.label for row in rows if row.label != NO_LABEL), NO_LABEL)
    meta = next((row.meta for row in rows if row.meta), {})
    captions = tuple(caption for row in rows for caption in row.captions)
    return replace(first, captions=captions, label=label, meta=meta)


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


def skip_or_raise(error: BadSampleError, on_error: str) -> SkippedRecord:
    """``error`` as a counted skip, or raised again when ``on_error`` is ``"raise"``."""
    if on_error == "raise":
        raise error
    return SkippedRecord(error.reason, error.key)


def materialise(
    sample: RawSample | BadSampleError, on_error: str, max_pixels: int = MAX_PIXELS
) -> ImageTextRecord | SkippedRecord:
    """Decode ``sample``; a bad one becomes a ``SkippedRecord`` or raises.

    ``sample`` may already be a ``BadSampleError`` when the index entry itself was
    unreadable (a broken manifest row, a corrupt shard); it is handled the same way.
    """
    try:
        if isinstance(sample, BadSampleError):
            raise sample
        captions, dropped = decode_captions(sample.captions, sample.key)
        image = decode_image(sample.image, sample.key, max_pixels)
    except BadSampleError as error:
        return skip_or_raise(error, on_error)
    meta = {**sample.meta, "dropped_captions": dropped} if dropped else dict(sample.meta)
    return ImageTextRecord(image, captions, sample.image_id, sample.label, sample.key, meta)
