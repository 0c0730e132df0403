"""A batch whose every sample was bad: collation gives an empty batch with its skip counts,
training skips the step without moving any weight, evaluation and prediction pass over it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch

from tests.distributed.bad_data_fit import main as fit
from tests.tiny import TINY_TEXT
from vlp.datamodules.collate import Collate
from vlp.datamodules.records import SkippedRecord
from vlp.datamodules.samples import NoItem
from vlp.encoders import TextEncoder
from vlp.evaluation.evaluator import Evaluator
from vlp.prediction_writer import _batches


def test_collate_of_only_bad_samples_is_an_empty_batch_that_counts_them() -> None:
    tokenize = TextEncoder(config=TINY_TEXT, max_length=16).tokenize
    items = [SkippedRecord("corrupt", "a"), NoItem(), SkippedRecord("missing", "b")]
    batch = Collate(tokenize)(items)
    assert batch["skipped"] == Counter(corrupt=1, missing=1)
    assert len(batch["images"]) == 0 and batch["text_ids"].shape == (0, 0)
    assert batch["image_ids"].tolist() == batch["text_image_ids"].tolist() == []


def test_training_skips_an_all_corrupt_batch_and_evaluation_still_counts(tmp_path: Path) -> None:
    result = fit(1, tmp_path / "fit", corrupt=(0, 1))  # the first batch of 2
    start, after_skipped, *trained = result["checksums"]
    assert after_skipped == start and len(trained) == 3 and trained[0] != start
    metrics = result["metrics"]
    assert metrics["data/skipped_steps"] == 1 and metrics["data/skipped_corrupt"] == 2
    assert metrics["val/retrieval/i2t_r1"] == 1.0 and metrics["val/data/skipped_missing"] == 0


def test_an_accumulation_window_ending_in_an_empty_batch_still_steps(tmp_path: Path) -> None:
    """Batches 0 and 1 accumulate into one step; batch 1 lost every sample: the step
    applies batch 0's gradient rather than dropping the window."""
    result = fit(1, tmp_path / "fit", corrupt=(2, 3), accumulate=2)
    start, after_first, after_window, *_ = result["checksums"]
    assert after_first == start  # inside the window: no step yet
    assert after_window != start
    assert result["metrics"]["data/skipped_steps"] == 1


def test_prediction_writer_leaves_out_empty_batches() -> None:
    assert _batches([{"x": torch.ones(1)}, {}]) == [{"x": torch.ones(1)}]
    assert _batches([[{}], [{"y": 1}]]) == []


def test_evaluation_batch_of_only_bad_samples_is_counted() -> None:
    evaluator = Evaluator(SimpleNamespace(objectives=[], device=torch.device("cpu")))
    evaluator.add({"images": torch.empty(0), "skipped": Counter(corrupt=3)})
    metrics = evaluator.compute(None, None)
    assert metrics["data/skipped_corrupt"] == 3.0 and "retrieval/i2t_r1" not in metrics
    assert evaluator.predict({"images": torch.empty(0)}) == {}
