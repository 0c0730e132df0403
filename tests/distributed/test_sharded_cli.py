"""Sharded (FSDP) training through the CLI: its whole checkpoint equals the DDP run's,
a single process evaluates it, and evaluation on the sharded model is refused clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed.sharded_fit import sharded_config
from vlp.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


def fit(strategy: str, root: Path) -> Path:
    root.mkdir()
    command = [sys.executable, "-m", "tests.distributed.sharded_fit", strategy, str(root)]
    subprocess.run(command, check=True, timeout=600, capture_output=True, cwd=ROOT)
    return next((root / "runs/tiny/version_0/checkpoints").glob("*.ckpt"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    return {strategy: fit(strategy, root / strategy) for strategy in ("ddp", "fsdp")}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.ddp
def test_sharded_checkpoint_is_whole_and_equals_the_ddp_one(checkpoints: dict[str, Path]) -> None:
    ddp, fsdp = weights(checkpoints["ddp"]), weights(checkpoints["fsdp"])
    assert set(fsdp) == set(ddp)
    assert any(".image_queue." in name for name in ddp) and any("teachers." in n for n in ddp)
    for name, value in ddp.items():
        torch.testing.assert_close(fsdp[name], value, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.ddp
def test_one_process_evaluates_the_sharded_checkpoint(checkpoints: dict[str, Path]) -> None:
    config = checkpoints["fsdp"].parents[4] / "config.yaml"
    single = ["--trainer.devices", "1", "--trainer.strategy", "auto"]
    args = ["validate", "--config", str(config), *single, "--trainer.limit_val_batches", "1"]
    cli = run_cli([*args, "--ckpt_path", str(checkpoints["fsdp"])])
    assert "val/retrieval/i2t_r1" in cli.trainer.callback_metrics


@pytest.mark.ddp
def test_evaluating_a_sharded_model_is_refused(tmp_path: Path) -> None:
    config = sharded_config(tmp_path, "fsdp")
    args = ["validate", "--config", str(config), "--trainer.limit_val_batches", "1"]
    command = [sys.executable, "-m", "vlp.cli", *args]
    run = subprocess.run(command, timeout=600, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0
    assert "validation does not run on a sharded model" in run.stderr
