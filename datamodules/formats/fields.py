"""Reading the id, label and meta fields that every index format carries.

One set of rules for all formats, so a dataset converted from one format to
another keeps its ids and labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vlp.datamodules.formats.decode import ImageSource
from vlp.datamodules.formats.sample import RawSample
from vlp.datamodules.records import NO_LABEL, BadSampleError, stable_id

_INTEGER = re.compile(r"-?\d+")


def require_fields(source: object, required: Mapping[str, str], found: Iterable[str]) -> None:
    """Fail at construction when a required field is absent from the whole index.

    ``required`` maps a role ("image", "caption") to the configured field name. A
    wrong column name would otherwise turn every sample into a skip and look like
    a dataset of bad images.
    """
    found = sorted(set(found))
    for role, name in required.items():
        if name not in found:
            raise ValueError(
                f"{source}: required {role} field {name!r} not found; fields found: {found}"
            )


def parse_image_id(value: object, fallback: str, key: str) -> int:
    """An integer id used as is; any other string hashed; absent, hash of ``fallback``.

    Integers written as text (CSV has no other kind) count as integers, so a CSV
    and a JSON copy of one dataset agree.
    """
    if value is None or value == "":
        return stable_id(fallback)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value) if _INTEGER.fullmatch(value) else stable_id(value)
    raise BadSampleError("bad_field", key, f"image id {value!r} is not an int or str")


def parse_label(value: object, key: str) -> int:
    """A class index, or ``NO_LABEL`` when the field is empty."""
    if value is None or value == "":
        return NO_LABEL
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise BadSampleError("bad_field", key, f"label {value!r} is not an integer")


def parse_meta(value: object, key: str) -> dict[str, Any]:
    """Extras stored as a JSON object, or as a string holding one (CSV, HF)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise BadSampleError("bad_field", key, f"meta is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise BadSampleError("bad_field", key, f"meta {value!r} is not a JSON object")
    return value


def parse_entry(
    image: ImageSource,
    captions: object,
    *,
    image_id: object,
    label: object,
    meta: object,
    id_fallback: str,
    key: str,
    where: str,
) -> RawSample | BadSampleError:
    """An index entry as a ``RawSample``, or why its fields are unusable.

    ``captions`` may be one caption, a list of them, or None (no caption, which
    ``materialise`` reports as empty). ``key`` names the sample (its image);
    ``where`` names the index entry (a manifest line, an annotation), which is
    what a field error should point at.
    """
    if not isinstance(captions, list | tuple):
        captions = () if captions is None else (captions,)
    try:
        return RawSample(
            image=image,
            captions=tuple(captions),
            image_id=parse_image_id(image_id, id_fallback, where),
            key=key,
            label=parse_label(label, where),
            meta=parse_meta(meta, where),
        )
    except BadSampleError as error:
        return error
