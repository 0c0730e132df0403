"""2 processes × B on gloo give the same losses and weights as 1 process × 2B, whether
each process holds the whole model (DDP) or a shard of every weight (FSDP)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.launch import run_script
from tests.distributed.one_step import rank_path

QUEUE = ("image_queue.", "text_queue.")


def run(
    devices: int,
    batch_size: int,
    out: Path,
    objective: str,
    steps: int,
    strategy: str = "ddp",
    recompute: bool = False,
    chunk_size: int = 0,
) -> dict:
    args = [devices, batch_size, out, objective, steps, strategy, int(recompute), chunk_size]
    run_script("tests.distributed.one_step", *args)
    return load_file(str(out))


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], dict]:
    """The 1-process run of an objective, made once for both strategies."""

    @cache
    def single(objective: str, steps: int) -> dict:
        return run(
            1, 8, tmp_path_factory.mktemp(objective) / "single.safetensors", objective, steps
        )

    return single


def sorted_queue(state: dict, prefix: str) -> torch.Tensor:
    """Queue rows ordered by image id: ranks enqueue the same rows in rank order."""
    order = state[prefix + "image_ids"].argsort()
    return state[prefix + "features"][order]


@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize(
    ("objective", "steps"), [("itc", 1), ("tcl", 2), ("data2vec", 2), ("flamingo", 2)]
)
def test_two_ranks_match_one_rank_on_the_same_global_batch(
    single_process: Callable[[str, int], dict],
    tmp_path: Path,
    objective: str,
    steps: int,
    strategy: str,
) -> None:
    single = single_process(objective, steps)
    double = run(2, 4, tmp_path / "double.safetensors", objective, steps, strategy)
    assert (int(double.pop("sharded")) > 20) == (strategy == "fsdp")
    assert_same_run(single, double, objective)
    if objective == "data2vec":  # EMA teachers: moved twice, identical on both ranks
        other_rank = load_file(str(rank_path(tmp_path / "double.safetensors", 1)))
        teachers = [name for name in double if name.startswith("teachers.")]
        assert len(teachers) > 10
        for name in teachers:
            assert torch.equal(double[name], other_rank[name]), name
        updates = [name for name in teachers if name.endswith(".updates")]
        assert len(updates) == 3 and all(int(double[name]) == steps for name in updates)
        block = "model.blocks.0.mlp.fc1.weight"
        vision_teacher = next(n for n in teachers if n.startswith("teachers.vision") and block in n)
        assert not torch.allclose(double[vision_teacher], double[f"encoders.vision.{block}"])


def assert_same_run(single: dict, double: dict, objective: str) -> None:
    """The same losses and weights, and for TCL the same queue rows."""
    assert torch.allclose(single["loss"], double["loss"], rtol=1e-5), (
        single["loss"],
        double["loss"],
    )
    compared = 0
    for name, value in single.items():
        if name == "sharded" or any(q in name for q in QUEUE):
            continue
        assert torch.allclose(value, double[name], atol=1e-6, rtol=1e-5), name
        compared += 1
    assert compared > 10
    if objective == "tcl":  # the second step used the first step's queued keys
        for queue in ("objectives.0.image_queue.", "objectives.0.text_queue."):
            assert int(single[queue + "filled"].sum()) == 16
            assert torch.allclose(
                sorted_queue(single, queue), sorted_queue(double, queue), atol=1e-6
            )


@pytest.mark.ddp
@pytest.mark.parametrize(("objective", "steps"), [("itc", 1), ("siglip", 1), ("tcl", 2)])
def test_ranks_that_encode_in_chunks_match_one_rank(
    single_process: Callable[[str, int], dict], tmp_path: Path, objective: str, steps: int
) -> None:
    """Gradient caching under DDP (``model.tower_chunk_size``: 3 + 1 rows per tower pass
    on each rank's 4): the negatives, queues and weights of one process on all 8 rows
    (SigLIP's gather over ranks is checked here, in chunks, not in a run of its own)."""
    single = single_process(objective, steps)
    double = run(2, 4, tmp_path / "double.safetensors", objective, steps, chunk_size=3)
    assert_same_run(single, double, objective)


@pytest.mark.ddp
def test_sharded_ranks_that_recompute_activations_match_one_rank(
    single_process: Callable[[str, int], dict], tmp_path: Path
) -> None:
    """Activation checkpointing recomputes the very layers FSDP gathers unit by unit (the
    towers', the resampler's and the LM's): the recompute in backward finds its unit
    gathered, and the weights come out as one process's without recomputing."""
    single = single_process("flamingo", 2)
    double = run(2, 4, tmp_path / "double.safetensors", "flamingo", 2, "fsdp", recompute=True)
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=0)
    compared = [name for name in single if name != "sharded"]
    assert len(compared) > 10
    for name in compared:
        assert torch.allclose(single[name], double[name], atol=1e-6, rtol=1e-5), name
