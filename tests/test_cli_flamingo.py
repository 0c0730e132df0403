"""The Flamingo mixture experiment trains end to end through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import last_value, read_metrics
from vlp.cli import run_cli
from vlp.data_command import write_synthetic

CONFIG = Path(__file__).resolve().parents[1] / "configs/experiments/flamingo_tiny.yaml"


@pytest.mark.slow  # ~80 s: the experiment's own batch sizes (16 documents of ≤5 images)
def test_flamingo_mixture_trains_every_dataset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_synthetic(tmp_path / "data/scenes", train=16, val=8, test=8)
    run_cli(
        ["fit", "--config", str(CONFIG), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
         "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1", "--data.batch_size=4",
         "--data.num_workers=0"]
    )  # fmt: skip
    rows = read_metrics(tmp_path / "runs/flamingo_tiny/version_0")
    for name in ("pairs/itc/contrastive_loss", "pairs/flamingo/lm_loss", "docs/flamingo/lm_loss",
                 "clips/flamingo/lm_loss"):  # fmt: skip
        assert last_value(rows, f"train/{name}") > 0
    assert 0 <= last_value(rows, "val/retrieval/i2t_r1") <= 1
