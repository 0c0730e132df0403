"""Under DDP every rank generates for its own images and scores the gathered corpus:
two gloo ranks report the metrics of one process that saw all the images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.evaluation.test_fewshot import _batch, _evaluation, _vision
from vlp.evaluation.fewshot import FewShotConfig

CONFIG = FewShotConfig(shots=(0,), text_only_demos=0)
IMAGES = [[1, 2, 3], [4, 5]]  # rank 0's and rank 1's share


def _metrics(shares: list[list[int]]) -> dict[str, float]:
    generator, evaluation = _evaluation(CONFIG, support=[])
    generator.generate = lambda visual, prompts, decoding: [
        "caption 1" if "Question" not in p else "red" for p in prompts
    ]
    for ids in shares:
        batch = _batch(ids)
        batch["captions"] = [[f"caption {i}", f"a thing {i % 2}"] for i in ids]
        batch["questions"] = [
            [{"question": "what?", "answer": "red" if i < 3 else "no"}] for i in ids
        ]
        evaluation.add(batch, _vision(batch["images"]))
    return evaluation.compute()


def _rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.save(_metrics([IMAGES[rank]]), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_ranks_score_the_gathered_corpus(tmp_path: Path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    single = _metrics(IMAGES)
    assert single["vqa/acc_0shot"] == pytest.approx(2 / 5)
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) == pytest.approx(single)
