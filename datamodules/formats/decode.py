"""Turn raw image and caption bytes into clean values, or say exactly why not.

Real crawls are full of truncated downloads, HTML saved as ``.jpg``, decompression
bombs and mis-encoded text. Each check here raises ``BadSampleError`` with one of
``RECORD_SKIP_REASONS`` so the caller can skip-and-count or fail fast; nothing is padded,
guessed or silently repaired.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from vlp.datamodules.records import BadSampleError

MAX_PIXELS = 89_478_485  # PIL's own default bomb limit (1024 * 1024 * 1024 // 4 // 3)

ImageSource = str | os.PathLike | bytes


def decode_image(source: ImageSource, key: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode ``source`` (a path or encoded bytes) into an RGB image.

    The size is checked from the header before any pixel is decoded, so a bomb
    costs nothing. PIL's own bomb guard (``Image.MAX_IMAGE_PIXELS``) still applies
    on top, so the effective limit is the smaller of the two.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With this global on, PIL pads truncated files with grey instead of
        # failing, and they would reach training looking like valid images.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; truncated images cannot be "
            "detected. Turn it off before reading datasets."
        )
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise BadSampleError("missing", key, f"no file at {source}")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise BadSampleError(
                        "too_large", key, f"{width}x{height} > max_pixels={max_pixels}"
                    )
                image.load()  # decode every pixel now, so truncation fails here
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadSampleError("too_large", key, str(error)) from error
    except BadSampleError:
        raise
    except Exception as error:  # PIL's plugins raise many types on malformed input
        raise BadSampleError("corrupt", key, f"{type(error).__name__}: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, with wide grayscale scaled to 8 bits first.

    PIL's ``convert("RGB")`` clips wide samples to 0..255, so a 16-bit grayscale PNG
    (almost every value above 255) would come out white. The scaling keeps 0 black and
    the format's full scale white: ``I;16`` samples are divided by 257 (65535 → 255);
    ``I`` (32-bit integers, as PIL reads 16-bit grayscale from some files) is taken to
    hold 16-bit samples, so it is clipped to 0..65535 first; ``F`` (32-bit floats) is
    taken to hold 0..1, the convention of float images, and clipped to it.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        samples = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257
    elif image.mode == "F":
        samples = np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255
    else:
        return image.convert("RGB")
    return Image.fromarray(np.round(samples).astype(np.uint8), "L").convert("RGB")


def decode_caption(raw: object, key: str) -> str:
    """A caption as stripped, valid UTF-8 text.

    ``str`` input may carry lone surrogates (from ``errors="surrogateescape"`` or a
    JSON ``\\ud800`` escape): those are treated like undecodable bytes.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadSampleError("bad_encoding", key, str(error)) from error
    if not isinstance(raw, str):
        raise BadSampleError("bad_field", key, f"caption is a {type(raw).__name__}")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadSampleError("bad_encoding", key, str(error)) from error
    text = raw.strip()
    if not text:
        raise BadSampleError("empty_caption", key)
    return text


def decode_captions(raws: Iterable[object], key: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """The good captions in order, and how many bad ones were dropped per reason.

    One bad caption should not cost an image its other captions; only when none
    survives is the whole sample bad (with the first caption's reason).
    """
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    first_error: BadSampleError | None = None
    for raw in raws:
        try:
            kept.append(decode_caption(raw, key))
        except BadSampleError as error:
            dropped[error.reason] += 1
            first_error = first_error or error
    if not kept:
        raise first_error or BadSampleError("empty_caption", key, "no captions")
    return tuple(kept), dict(dropped)
