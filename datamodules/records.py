"""The unit every data source yields: one image with all of its captions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

NO_LABEL = -1


@dataclass(frozen=True)
class ImageTextRecord:
    """One image and its captions.

    Several captions share one ``image_id`` so that contrastive objectives and
    retrieval metrics know they are positives of each other.
    """

    image: Image.Image
    captions: tuple[str, ...]
    image_id: int
    label: int = NO_LABEL  # class index for zero-shot / linear probe; NO_LABEL if unknown
    key: str = ""  # where the record came from (path, shard key), for messages
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras


@dataclass(frozen=True)
class SkippedRecord:
    """A record dropped because its input was bad; counted, never silently lost."""

    reason: str  # one of RECORD_SKIP_REASONS
    key: str


RECORD_SKIP_REASONS = (
    "missing",
    "corrupt",
    "too_large",
    "empty_caption",
    "bad_encoding",
    "bad_field",
)
CAPTION_PREFIX = "caption_"
# What the module and the evaluator log as ``data/skipped_<reason>``: whole records by
# reason, and, apart from them, single captions dropped from records that were kept.
SKIP_REASONS = RECORD_SKIP_REASONS + tuple(
    CAPTION_PREFIX + reason for reason in ("empty_caption", "bad_encoding", "bad_field")
)


class BadSampleError(ValueError):
    """Raised instead of skipping when the data module is set to fail fast."""

    def __init__(self, reason: str, key: str, detail: str = "") -> None:
        self.reason = reason
        self.key = key
        super().__init__(f"{key}: {reason}{f' ({detail})' if detail else ''}")


def stable_id(text: str) -> int:
    """A 63-bit id that is the same in every process and run (unlike ``hash``)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
