"""Captioned video clips from a JSONL or CSV manifest (WebVid, MSR-VTT, VATEX, ...).

One row per clip: ``video`` names a video file, a folder of frame images or (JSONL)
a list of frame image paths, relative to ``video_root`` (default: the manifest's
folder); ``caption`` holds a caption or (JSONL) a list of them, each its own
training row. Optional ``start``/``end`` (seconds) cut a clip out of a longer video
file. Each clip becomes ``num_frames`` frames (``video_frames``), one medium with
its caption, as the LM objective reads them (``<image>caption<|endofchunk|>``).

A row with a missing, undecodable or oversized video, a bad caption or a bad field
is skipped and counted under its reason (or raises, with ``on_error="raise"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from vlp.datamodules.formats.decode import MAX_PIXELS, decode_caption
from vlp.datamodules.formats.fields import require_fields
from vlp.datamodules.formats.manifest import CsvManifest, JsonlManifest
from vlp.datamodules.formats.sample import check_on_error, skip_or_raise
from vlp.datamodules.formats.video_frames import (
    FrameSampling,
    folder_frames,
    read_image_frames,
    read_video_frames,
)
from vlp.datamodules.media_text import ClipSource, MediaTextRecord, Medium
from vlp.datamodules.records import BadSampleError, SkippedRecord
from vlp.datamodules.samples import Visit


@dataclass(frozen=True)
class _Clip:
    video: Path | list[Path]  # a video file or frame folder, or the frames in order
    caption: str
    start: float | None
    end: float | None
    key: str  # "manifest:line", with "#k" for the k-th caption of a row
    medium: str  # the video and times: rows and captions naming the same are one clip


@dataclass(frozen=True)
class _Fields:
    video: str
    caption: str
    start: str
    end: str


class ClipManifest(ClipSource):
    """Map-style clips, parsed up front and decoded on access."""

    def __init__(
        self,
        path: str | os.PathLike,
        video_root: str | os.PathLike | None = None,
        num_frames: int = 4,
        jitter_frames: bool = False,
        video_field: str = "video",
        caption_field: str = "caption",
        start_field: str = "start",
        end_field: str = "end",
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        """
        Args:
            path: the manifest, CSV when it ends in ``.csv``, else JSON lines.
            video_root: the folder that video paths are relative to.
            num_frames: frames per clip, one from each of as many equal segments: the
                middle frame of each.
            jitter_frames: in training, a random frame of each segment instead (TSN's
                training sampling), drawn anew on every visit.
            on_error: ``skip`` (count bad rows) or ``raise``.
            max_pixels: frames with more pixels per frame are skipped as ``too_large``.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        self.path = Path(path)
        self.video_root = Path(video_root) if video_root is not None else self.path.parent
        self.num_frames = num_frames
        self.jitter_frames = jitter_frames
        self.on_error = check_on_error(on_error)
        self.max_pixels = max_pixels
        reader = CsvManifest if self.path.suffix.lower() == ".csv" else JsonlManifest
        found, rows = reader.read_rows(self.path)
        require_fields(self.path, {"video": video_field, "caption": caption_field}, found)
        fields = _Fields(video_field, caption_field, start_field, end_field)
        self.clips: list[_Clip | BadSampleError] = []
        for key, row in rows:
            self.clips.extend(
                [row] if isinstance(row, BadSampleError) else self._parse(row, key, fields)
            )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> MediaTextRecord | SkippedRecord:
        clip = self.clips[index]
        try:
            if isinstance(clip, BadSampleError):
                raise clip
            # a training visit carries its random key: jittered frames that a resumed run
            # replays; evaluation (a plain index) takes the middles
            jitter = self.jitter_frames and isinstance(index, Visit)
            sampling = FrameSampling(self.num_frames, Random(index.key) if jitter else None)
            frames = self._frames(clip, sampling)
        except BadSampleError as error:
            return skip_or_raise(error, self.on_error)
        return MediaTextRecord((frames, clip.caption), False, clip.key, medium_key=clip.medium)

    def _frames(self, clip: _Clip, sampling: FrameSampling) -> Medium:
        if isinstance(clip.video, Path) and not clip.video.is_dir():
            return read_video_frames(
                clip.video, sampling, clip.key, self.max_pixels, clip.start, clip.end
            )
        if clip.start is not None or clip.end is not None:
            detail = "start/end need a video file, not frame images (their times are unknown)"
            raise BadSampleError("bad_field", clip.key, detail)
        frames = clip.video if isinstance(clip.video, list) else folder_frames(clip.video)
        return read_image_frames(frames, sampling, clip.key, self.max_pixels)

    def _parse(
        self, row: dict[str, Any], key: str, fields: _Fields
    ) -> list[_Clip | BadSampleError]:
        """One clip per caption of the row, or the row's one error."""
        try:
            video = self._video(row.get(fields.video), key, fields.video)
            start = _seconds(row.get(fields.start), key, fields.start)
            end = _seconds(row.get(fields.end), key, fields.end)
            if start is not None and end is not None and end <= start:
                detail = f"{fields.end}={end} <= {fields.start}={start}"
                raise BadSampleError("bad_field", key, detail)
        except BadSampleError as error:
            return [error]
        # MSR-VTT-style manifests repeat a video on a row per caption: evaluation must
        # retrieve it once, not rank it against copies of itself
        medium = f"{video}" if isinstance(video, Path) else "\n".join(map(str, video))
        medium += f"@{start}-{end}" if start is not None or end is not None else ""
        raws = row.get(fields.caption)
        captions = raws if isinstance(raws, list) else [raws]
        clips: list[_Clip | BadSampleError] = []
        for k, raw in enumerate(captions):
            clip_key = key if len(captions) == 1 else f"{key}#{k}"
            try:
                caption = decode_caption(raw, clip_key)
                clips.append(_Clip(video, caption, start, end, clip_key, medium))
            except BadSampleError as error:
                clips.append(error)
        return clips

    def _video(self, value: object, key: str, field: str) -> Path | list[Path]:
        if isinstance(value, str) and value:
            return self.video_root / value
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return [self.video_root / v for v in value]
        raise BadSampleError("bad_field", key, f"{field}={value!r} is not a path or list of paths")


def _seconds(value: object, key: str, field: str) -> float | None:
    """A time in seconds; empty (a CSV cell) or absent is ``None``."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)  # CSV gives text
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not 0 <= seconds < float("inf"):
        raise BadSampleError("bad_field", key, f"{field}={value!r} is not a time in seconds")
    return seconds
