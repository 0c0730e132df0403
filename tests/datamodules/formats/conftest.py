"""Small random records shared by the format tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from vlp.datamodules.records import NO_LABEL, ImageTextRecord, stable_id

# Captions chosen to break naive writers: non-ASCII, CSV quoting, inner newline.
CAPTIONS = [
    ("a red circle",),
    ("un café au lait", 'a "quoted", comma'),
    ("日本語のキャプション", "naïve façade", "line one\nline two"),
    ("two squares",),
    ("émoji 🐱 cat", "plain"),
    ("last one", "x", "y"),
]
SIZES = [(5, 7), (16, 9), (1, 1), (32, 20), (8, 8), (3, 12)]
IMAGE_IDS = [0, 7, stable_id("scene-2"), -5, 123456789, stable_id("scene-5")]
LABELS = [3, NO_LABEL, 0, 1, NO_LABEL, 2]


def _make_records(n: int = len(SIZES), seed: int = 0) -> list[ImageTextRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        records.append(
            ImageTextRecord(
                image=Image.fromarray(pixels, "RGB"),
                captions=CAPTIONS[i % len(CAPTIONS)],
                image_id=IMAGE_IDS[i] if i < len(IMAGE_IDS) else 1000 + i,
                label=LABELS[i % len(LABELS)],
                meta={"source": "test", "index": i} if i % 2 else {},
            )
        )
    return records


@pytest.fixture
def make_records() -> Callable[..., list[ImageTextRecord]]:
    return _make_records


@pytest.fixture
def records() -> list[ImageTextRecord]:
    return _make_records()
