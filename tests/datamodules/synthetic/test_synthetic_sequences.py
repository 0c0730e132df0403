"""Interleaved documents and moving-object clips built from synthetic scenes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlp.datamodules.synthetic import COLOURS, SHAPES, make_clip, make_interleaved_document
from vlp.datamodules.synthetic.generate import STREAMS, SceneKnobs, generate_scene
from vlp.evaluation.fewshot import VQA
from vlp.flamingo.tokens import END_OF_CHUNK, IMAGE


def test_documents_have_two_to_five_scenes_with_connecting_text() -> None:
    lengths = set()
    for index in range(40):
        document = make_interleaved_document(seed=0, index=index)
        lengths.add(len(document))
        texts = [text for text, _ in document]
        assert texts[0].startswith("first, ") and texts[-1].startswith("finally, ")
        assert all(re.search(rf"\b({'|'.join(SHAPES)})\b", text) for text in texts)
        assert all(image.size == (64, 64) and image.mode == "RGB" for _, image in document)
    assert lengths == {2, 3, 4, 5}
    assert len(make_interleaved_document(seed=0, index=0, num_scenes=3)) == 3
    longer = {len(make_interleaved_document(0, index, max_scenes=9)) for index in range(80)}
    assert longer == set(range(2, 10))
    with pytest.raises(ValueError, match="max_scenes"):
        make_interleaved_document(0, 0, max_scenes=1)


def test_documents_are_deterministic_and_differ_by_index() -> None:
    first, again = make_interleaved_document(1, 7), make_interleaved_document(1, 7)
    assert [t for t, _ in first] == [t for t, _ in again]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for (_, a), (_, b) in zip(first, again, strict=True)
    )
    other = make_interleaved_document(1, 8)
    assert [t for t, _ in first] != [t for t, _ in other]


def test_question_chunks_answer_their_own_scene_in_the_vqa_layout() -> None:
    exchange = re.compile(r"Question:(.+) Short answer:(.+)")
    asked = kept = 0
    for index in range(30):
        plain = make_interleaved_document(seed=2, index=index)
        mixed = make_interleaved_document(seed=2, index=index, question_fraction=0.5)
        for position, ((text, image), (plain_text, plain_image)) in enumerate(
            zip(mixed, plain, strict=True)
        ):
            assert np.array_equal(np.asarray(image), np.asarray(plain_image))
            match = exchange.fullmatch(text)
            if match is None:
                assert text == plain_text
                kept += 1
                continue
            asked += 1
            assert f"{IMAGE}{text}{END_OF_CHUNK}" == VQA.demo.format(
                question=match[1], answer=match[2]
            )
            scene = generate_scene(
                [2, STREAMS["interleaved"], index, position], SceneKnobs(captions_per_image=1)
            )
            assert {"question": match[1], "answer": match[2]} in scene.meta["questions"]
    assert 0.3 < asked / (asked + kept) < 0.7
    every = make_interleaved_document(seed=2, index=0, question_fraction=1.0)
    assert all(exchange.fullmatch(text) for text, _ in every)
    with pytest.raises(ValueError, match="question_fraction"):
        make_interleaved_document(seed=2, index=0, question_fraction=1.5)


_CAPTION = re.compile(
    rf"an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) moving (to the right|to the left|up|down)"
)


@pytest.mark.parametrize("num_frames", [2, 4, 6])
def test_clip_object_moves_in_the_captioned_direction(num_frames: int) -> None:
    palette = np.array(list(COLOURS.values()), dtype=float)
    directions = set()
    for index in range(12):
        clip = make_clip(seed=0, index=index, num_frames=num_frames)
        match = _CAPTION.fullmatch(clip.caption)
        assert match, clip.caption
        colour, shape, direction = match.groups()
        directions.add(direction)
        assert len(clip.frames) == num_frames
        xs = [o["x"] for o in clip.meta["objects"]]
        ys = [o["y"] for o in clip.meta["objects"]]
        moving, still = (xs, ys) if direction.startswith("to the") else (ys, xs)
        steps = np.diff(moving)
        assert np.all(steps > 0) if direction in ("to the right", "down") else np.all(steps < 0)
        assert len(set(still)) == 1
        for frame, obj in zip(clip.frames, clip.meta["objects"], strict=True):
            assert obj["shape"] == shape
            centre = np.asarray(frame, dtype=float)[int(obj["y"] * 64), int(obj["x"] * 64)]
            nearest = list(COLOURS)[int(np.argmin(np.linalg.norm(palette - centre, axis=1)))]
            assert nearest == colour
    assert len(directions) > 1


def test_clips_are_deterministic_and_only_the_object_changes() -> None:
    clip = make_clip(seed=2, index=5)
    again = make_clip(seed=2, index=5)
    assert clip.caption == again.caption and clip.meta == again.meta
    frames = [np.asarray(f) for f in clip.frames]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(frames, again.frames, strict=True))
    changed = np.any(frames[0] != frames[-1], axis=-1)
    first, last = clip.meta["objects"][0], clip.meta["objects"][-1]
    grid = (np.arange(64) + 0.5) / 64
    near_object = np.zeros((64, 64), dtype=bool)
    for o in (first, last):
        near_object |= np.hypot(grid[None, :] - o["x"], grid[:, None] - o["y"]) < o["radius"] + 0.03
    assert changed.any() and not (changed & ~near_object).any()
    with pytest.raises(ValueError, match="2 frames"):
        make_clip(seed=0, index=0, num_frames=1)
