"""2 processes × B on gloo give the same loss and weights after one SGD step as 1 × 2B."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def run(devices: int, batch_size: int, out: Path) -> dict[str, torch.Tensor]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.distributed.one_step",
            str(devices),
            str(batch_size),
            str(out),
        ],
        cwd=ROOT,
        check=True,
        timeout=600,
        capture_output=True,
    )
    return load_file(str(out))


@pytest.mark.ddp
def test_two_ranks_match_one_rank_on_the_same_global_batch(tmp_path: Path) -> None:
    single = run(1, 8, tmp_path / "single.safetensors")
    double = run(2, 4, tmp_path / "double.safetensors")
    assert single["loss"].item() == pytest.approx(double["loss"].item(), rel=1e-5)
    changed = 0
    for name, value in single.items():
        assert torch.allclose(value, double[name], atol=1e-6, rtol=1e-5), name
        changed += int(name.startswith("objectives") or "encoders" in name)
    assert changed > 0
