"""A mixture on 2 processes × B per dataset gives the same steps as 1 process × 2B, each
process holding the whole model (DDP) or a shard of every weight (FSDP)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def run(devices: int, scale: int, out: Path, strategy: str = "ddp") -> dict:
    command = [sys.executable, "-m", "tests.distributed.mixture_step", str(devices), str(scale)]
    subprocess.run(
        [*command, str(out), strategy], check=True, timeout=600, capture_output=True, cwd=ROOT
    )
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
