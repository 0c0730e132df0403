"""The clip benchmark's layouts hold the same clips, so its rates compare like with like."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from vlp.datamodules.formats.clips import ClipManifest
from vlp.datamodules.formats.video_frames import segment_middles
from vlp.datamodules.synthetic.clips import make_clip

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark():
    path = ROOT / "benchmarks/clip_decoding.py"
    spec = importlib.util.spec_from_file_location("clip_decoding", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_layout_gives_each_clips_chosen_frames_and_caption(tmp_path: Path) -> None:
    benchmark = load_benchmark()
    layouts = benchmark.write_layouts(tmp_path, clips=2, length=12, size=32)
    for number, (name, rows) in enumerate(layouts.items()):
        manifest = tmp_path / f"{number}.jsonl"
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
        source = ClipManifest(manifest, num_frames=3, on_error="raise")
        for index in range(2):
            clip = make_clip(seed=0, index=index, num_frames=12, image_size=32)
            frames, caption = source[index].segments
            assert caption == clip.caption
            originals = [np.asarray(frame, float) for frame in clip.frames]
            # lossy layouts differ from every original; each frame is nearest its own
            nearest = [
                int(np.argmin([np.abs(np.asarray(frame, float) - o).mean() for o in originals]))
                for frame in frames
            ]
            assert nearest == segment_middles(12, 3), name
