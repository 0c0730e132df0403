"""A mixture on 2 processes × B per dataset gives the same steps as 1 process × 2B, each
process holding the whole model (DDP) or a shard of every weight (FSDP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.launch import run_script


def run(devices: int, scale: int, out: Path, strategy: str = "ddp") -> dict:
    run_script("tests.distributed.mixture_step", devices, scale, out, strategy)
    return load_file(str(out))


@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_accumulate_every_dataset_like_one_rank(tmp_path: Path, strategy: str) -> None:
    single = run(1, 4, tmp_path / "single.safetensors")
    double = run(2, 2, tmp_path / "double.safetensors", strategy)
    assert (int(double.pop("sharded")) > 20) == (strategy == "fsdp")
    single.pop("sharded")
    torch.testing.assert_close(single["loss"], double["loss"], rtol=1e-5, atol=1e-6)
    moved = 0
    for name, value in single.items():
        torch.testing.assert_close(value, double[name], rtol=1e-5, atol=1e-6, msg=name)
        moved += name.startswith("encoders.vision.")
    assert moved > 10 and len(single["loss"]) == 2
