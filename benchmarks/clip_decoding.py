"""Clips decoded per second by ``ClipManifest``, per storage layout, in one process.

    .venv/bin/python benchmarks/clip_decoding.py --clips 16 --length 96 --size 224 --frames 8

Writes ``--clips`` synthetic clips of ``--length`` frames (one object crossing the
frame, ``--size`` pixels square, 24 fps) as H.264 MP4 files, as lossless FFV1 MKV files,
as MJPEG AVI files (every frame a keyframe) and as folders of JPEG frames, then reads each layout through a manifest, taking
``--frames`` frames per clip: from the whole clip, and from a 1-second window in its
middle (``start``/``end``; video files only). A data loader's workers multiply the
rate by up to their number; the rate per core is what this measures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vlp.datamodules.formats.clip_writers import VIDEO_CODECS, write_video
from vlp.datamodules.formats.clips import ClipManifest
from vlp.datamodules.synthetic.clips import make_clip

FPS = 24
VIDEO_LAYOUTS = {"mp4 (H.264)": "libx264", "mkv (FFV1)": "ffv1", "avi (MJPEG)": "mjpeg"}


def write_layouts(out: Path, clips: int, length: int, size: int) -> dict[str, list[dict]]:
    """Each clip in every layout; the manifest rows of each layout."""
    rows: dict[str, list[dict]] = {name: [] for name in (*VIDEO_LAYOUTS, "jpeg folder")}
    for index in range(clips):
        clip = make_clip(seed=0, index=index, num_frames=length, image_size=size)
        for name, codec in VIDEO_LAYOUTS.items():
            path = out / f"{index}.{VIDEO_CODECS[codec][0]}"
            write_video(path, clip.frames, FPS, codec)
            rows[name].append({"video": path.name, "caption": clip.caption})
        folder = out / f"{index}_frames"
        folder.mkdir()
        for k, frame in enumerate(clip.frames):
            frame.save(folder / f"{k:05d}.jpg", quality=90)
        rows["jpeg folder"].append({"video": folder.name, "caption": clip.caption})
    return rows


def clips_per_second(manifest: Path, frames: int, repeats: int) -> float:
    source = ClipManifest(manifest, num_frames=frames, on_error="raise")
    started = time.perf_counter()
    for _ in range(repeats):
        for index in range(len(source)):
            source[index]
    return repeats * len(source) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--length", type=int, default=96, help="frames per written clip")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8, help="frames read per clip")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = Table(title=f"{args.clips} clips of {args.length} frames at {args.size} px, {FPS} fps")
    for column in ("layout", "bytes per clip", "whole clip: clips/s", "1-s window: clips/s"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for layout, rows in write_layouts(out, args.clips, args.length, args.size).items():
            size = sum(_size(out / row["video"]) for row in rows)
            whole = out / "whole.jsonl"
            whole.write_text("".join(json.dumps(row) + "\n" for row in rows))
            rate = clips_per_second(whole, args.frames, args.repeats)
            window_rate = "–"
            if layout != "jpeg folder":
                middle = args.length / FPS / 2
                cut = [row | {"start": middle - 0.5, "end": middle + 0.5} for row in rows]
                window = out / "window.jsonl"
                window.write_text("".join(json.dumps(row) + "\n" for row in cut))
                window_rate = f"{clips_per_second(window, args.frames, args.repeats):.1f}"
            table.add_row(layout, f"{size / len(rows):,.0f}", f"{rate:.1f}", window_rate)
    Console().print(table)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


if __name__ == "__main__":
    main()
