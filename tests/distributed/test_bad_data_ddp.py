"""Two gloo ranks stay in lockstep when one rank's batch is all corrupt and when a rank
has no validation item: the step is skipped on both, counted, and metrics are gathered,
whether each rank holds the whole model (DDP) or a shard of every weight (FSDP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.launch import run_script


@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_all_corrupt_batch_on_one_rank_and_a_one_image_validation_split(
    tmp_path: Path, strategy: str
) -> None:
    out = tmp_path / "fit"
    run_script("tests.distributed.bad_data_fit", 2, out, strategy, timeout=120)
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["checksums"] == ranks[1]["checksums"]  # the same weights on both ranks
    start, after_skipped, after_trained = ranks[0]["checksums"]
    assert after_skipped == start != after_trained  # no AdamW decay/momentum on a skip
    for rank in ranks:
        metrics = rank["metrics"]
        assert metrics["data/skipped_steps"] == 1
        assert metrics["data/skipped_corrupt"] == 2  # both on rank 1, summed over ranks
        # one image and its two captions, gathered from rank 0 by both ranks
        assert metrics["val/retrieval/i2t_r1"] == 1.0
        assert metrics["val/data/skipped_corrupt"] == 0
