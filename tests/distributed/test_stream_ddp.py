"""Streamed shards of unequal sizes on 2 gloo ranks: both ranks run the same number of
training steps (the shorter share's), end the epoch together and count the dropped batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.launch import run_script
from tests.distributed.stream_fit import main as fit


@pytest.mark.ddp
def test_unequal_shards_end_each_epoch_together_on_both_ranks(tmp_path: Path) -> None:
    out = tmp_path / "fit"
    run_script("tests.distributed.stream_fit", 2, out, 2, timeout=120)
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]
    assert [r["steps"] for r in ranks] == [4, 4]  # rank 1's two batches per epoch, not three
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    # the last epoch's count, summed over the ranks: rank 0 dropped one batch
    assert [r["metrics"]["data/dropped_batches"] for r in ranks] == [1.0, 1.0]


def test_one_process_streams_every_batch_and_drops_none(tmp_path: Path) -> None:
    result = fit(1, tmp_path / "fit")
    assert result["steps"] == 5 and result["metrics"]["data/dropped_batches"] == 0.0
