"""video2dataset-style WebDataset shards of captioned clips, streamed.

A sample is the tar members sharing a key: a video (``{key}.mp4|webm|mkv|mov|avi``) and
its caption, ``{key}.txt`` or the ``caption`` of ``{key}.json``. Shards are read, split
across ranks and workers, shuffled and resumed as image–text shards are
(:class:`~vlp.datamodules.formats.shards.WebDatasetShards`); each clip becomes
``num_frames`` frames (``video_frames``) with its caption, for the LM objective.

A stream reads each clip once per epoch, so ``jitter_frames`` draws a clip's frames from
(seed, epoch, key): a new draw each epoch, the same one when a resumed run replays it.
"""

from __future__ import annotations

import json
from random import Random
from typing import Any

from vlp.datamodules.formats.decode import MAX_PIXELS, decode_caption
from vlp.datamodules.formats.sample import skip_or_raise
from vlp.datamodules.formats.shards import Entry, WebDatasetShards
from vlp.datamodules.formats.video_frames import FrameSampling, read_video_frames
from vlp.datamodules.media_text import ClipSource, MediaTextRecord
from vlp.datamodules.records import BadSampleError, SkippedRecord

VIDEO_SUFFIXES = ("mp4", "webm", "mkv", "mov", "avi")


class WebDatasetClips(WebDatasetShards, ClipSource):
    """Streams captioned clips from ``urls`` (brace patterns allowed)."""

    def __init__(
        self,
        urls: str | list[str],
        num_frames: int = 4,
        jitter_frames: bool = False,
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
        shuffle_shards: bool = False,
        seed: int = 0,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        super().__init__(urls, on_error, max_pixels, shuffle_shards, seed)
        self.num_frames = num_frames
        self.jitter_frames = jitter_frames

    def record(self, entry: Entry) -> MediaTextRecord | SkippedRecord:  # type: ignore[override]
        try:
            if isinstance(entry, BadSampleError):
                raise entry
            key = f"{entry['__url__']}:{entry['__key__']}"
            video = _video(entry, key)
            caption = decode_caption(_caption(entry, key), key)
            frames = read_video_frames(video, self._sampling(key), key, self.max_pixels)
        except BadSampleError as error:
            return skip_or_raise(error, self.on_error)
        return MediaTextRecord((frames, caption), interleaved=False, key=key)

    def _sampling(self, key: str) -> FrameSampling:
        """The segments' middles, or (for a training stream) a random frame of each."""
        rng = Random(f"{self.seed}:{self.epoch}:{key}") if self.jitter_frames else None
        return FrameSampling(self.num_frames, rng)

    def is_whole(self, entry: dict[str, Any]) -> bool:
        return any(s in entry for s in VIDEO_SUFFIXES) and ("txt" in entry or "json" in entry)


def _video(entry: dict[str, Any], key: str) -> bytes:
    video = next((entry[suffix] for suffix in VIDEO_SUFFIXES if suffix in entry), None)
    if video is None:
        raise BadSampleError("missing", key, f"no .{'/.'.join(VIDEO_SUFFIXES)} member")
    return video


def _caption(entry: dict[str, Any], key: str) -> object:
    if "txt" in entry:
        return entry["txt"]
    try:
        info = json.loads(entry["json"]) if "json" in entry else {}
    except ValueError as error:  # bad JSON or bad UTF-8
        raise BadSampleError("corrupt", key, f".json: {error}") from error
    if not isinstance(info, dict):
        raise BadSampleError("bad_field", key, ".json is not an object")
    return info.get("caption")
