"""Collating documents and clips: media in document order, zero padding, counts, LM fields;
a batch of only bad documents is skipped in training, not a crash."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from tests.objectives.flamingo_tiny import tiny_data, tiny_flamingo, tiny_model
from tests.tiny import quiet_trainer
from vlp.datamodules.lm_text import LMTokenize
from vlp.datamodules.media_text import (
    MediaTextCollate,
    MediaTextRecord,
    MediaTextSource,
    to_media_sample,
)
from vlp.datamodules.mixture import batch_rows
from vlp.datamodules.records import SkippedRecord
from vlp.datamodules.synthetic.media_text import SyntheticClips, SyntheticDocuments
from vlp.encoders.text import MINILM
from vlp.flamingo import add_flamingo_tokens
from vlp.paths import resolve_model_path


def grey(level: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (level, level, level))


def first_pixel(image: Image.Image) -> torch.Tensor:
    """A transform that keeps only what tells the images apart: [C=1, H=1, W=1]."""
    return torch.tensor(float(image.getpixel((0, 0))[0])).reshape(1, 1, 1)


@pytest.fixture(scope="module")
def collate() -> MediaTextCollate:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    add_flamingo_tokens(tokenizer)
    return MediaTextCollate(LMTokenize(tokenizer, max_length=16, document_max_length=32))


def test_documents_keep_their_images_in_order_and_pad_the_shorter_rows(collate):
    long = MediaTextRecord(
        ("intro", (grey(10),), "red", (grey(20),), "blue", (grey(30),), "green"), True
    )
    short = MediaTextRecord(((grey(40),), "white"), True)
    items = [to_media_sample(r, first_pixel) for r in (long, short)]
    batch = collate([items[0], SkippedRecord("corrupt", "bad.png"), items[1]])
    assert batch["media"].shape == (2, 3, 1, 1, 1, 1)  # [B, T, F, C, H, W]
    assert batch["media"].flatten(1).tolist() == [[10, 20, 30], [40, 0, 0]]
    assert batch["media_counts"].tolist() == [3, 1]
    image_id = collate.lm_tokenize.tokenizer.convert_tokens_to_ids("<image>")
    assert (batch["lm_ids"] == image_id).sum(1).tolist() == [3, 1]
    assert batch["skipped"] == {"corrupt": 1}
    # the document rule: text before the first image is no target
    intro = collate.lm_tokenize.tokenizer.convert_tokens_to_ids("intro")
    assert batch["lm_labels"][0, (batch["lm_ids"][0] == intro)].tolist() == [-100]


def test_a_clip_is_one_medium_whose_frames_stay_in_order(collate):
    clip = MediaTextRecord(((grey(1), grey(2), grey(3)), "a red circle moving up"), False)
    batch = collate([to_media_sample(clip, first_pixel)])
    assert batch["media"].shape == (1, 1, 3, 1, 1, 1)
    assert batch["media"].flatten().tolist() == [1, 2, 3]
    caption = collate.lm_tokenize.tokenizer.convert_tokens_to_ids("circle")
    assert batch["lm_labels"][0, batch["lm_ids"][0] == caption].tolist() == [caption]


def test_images_and_clips_in_one_batch_are_refused(collate):
    image = to_media_sample(MediaTextRecord(((grey(1),), "a"), False), first_pixel)
    clip = to_media_sample(MediaTextRecord(((grey(1), grey(2)), "b"), False), first_pixel)
    with pytest.raises(ValueError, match="mixture"):
        collate([image, clip])


def test_a_batch_of_only_bad_documents_is_empty_and_counts_them(collate):
    batch = collate([SkippedRecord("corrupt", "a.png"), SkippedRecord("missing", "b.png")])
    assert batch_rows(batch) == 0  # what the module reads to skip the step
    assert batch["skipped"] == {"corrupt": 1, "missing": 1}


class FirstDocumentsBad(MediaTextSource):
    """Synthetic documents whose first ``bad`` ones are unreadable."""

    def __init__(self, bad: int) -> None:
        self.documents = SyntheticDocuments("train", 4, image_size=32, max_scenes=2)
        self.bad = bad

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> MediaTextRecord | SkippedRecord:
        return (
            SkippedRecord("corrupt", f"doc{index}") if index < self.bad else self.documents[index]
        )


def test_training_skips_a_batch_of_only_bad_documents_and_counts_them():
    model = tiny_model([tiny_flamingo()])
    data = tiny_data(model, train=FirstDocumentsBad(bad=2), batch_size=2, shuffle=False)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert metrics["data/skipped_steps"] == 1 and metrics["data/skipped_corrupt"] == 2
    assert "train/flamingo/lm_loss" in metrics  # the second batch trained


def test_synthetic_documents_put_each_image_before_its_sentence_and_clips_move():
    document = SyntheticDocuments("train", 4, image_size=16, max_scenes=3)[1]
    kinds = ["text" if isinstance(s, str) else len(s) for s in document.segments]
    assert kinds[0] == 1 and kinds[1] == "text" and kinds.count(1) <= 3
    assert document.segments[1].startswith("first,") and document.interleaved
    clip = SyntheticClips("train", 2, num_frames=4, image_size=16)[0]
    frames, caption = clip.segments
    assert len(frames) == 4 and "moving" in caption and not clip.interleaved
    train, val = (SyntheticDocuments(split, 1, image_size=16)[0] for split in ("train", "val"))
    assert train.segments[0][0].tobytes() != val.segments[0][0].tobytes()
