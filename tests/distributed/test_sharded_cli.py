"""Sharded (FSDP) training and evaluation through the CLI: the whole checkpoint equals the
DDP run's and loads on one process; sharded validation (generation included) gives the
DDP metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.distributed.launch import run_script
from vlp.cli import run_cli


def launch(strategy: str, root: Path, model: str, checkpoint: Path | None = None) -> None:
    root.mkdir(exist_ok=True)
    args = [strategy, str(root), model, *([str(checkpoint)] if checkpoint else [])]
    run_script("tests.distributed.sharded_fit", *args)


def fit(strategy: str, root: Path, model: str) -> Path:
    launch(strategy, root, model)
    return next((root / "runs/tiny/version_0/checkpoints").glob("*.ckpt"))


def validate(strategy: str, root: Path, model: str, checkpoint: Path) -> dict[str, float]:
    launch(strategy, root, model, checkpoint)
    return json.loads((root / "validate.json").read_text())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    return {strategy: fit(strategy, root / strategy, "albef") for strategy in ("ddp", "fsdp")}


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
    config = checkpoints["fsdp"].parents[4] / "fsdp_albef.yaml"
    single = ["--trainer.devices", "1", "--trainer.strategy", "auto"]
    args = ["validate", "--config", str(config), *single, "--trainer.limit_val_batches", "1"]
    cli = run_cli([*args, "--ckpt_path", str(checkpoints["fsdp"])])
    assert "val/retrieval/i2t_r1" in cli.trainer.callback_metrics


@pytest.mark.ddp
def test_sharded_validation_with_generation_gives_the_ddp_metrics(tmp_path: Path) -> None:
    """Each rank generates for its own images, to its own lengths: sharded ranks evaluate
    on the whole model, gathered once, or they would wait for one another forever."""
    checkpoint = fit("fsdp", tmp_path / "fit", "flamingo")
    sharded = validate("fsdp", tmp_path / "fsdp", "flamingo", checkpoint)
    whole = validate("ddp", tmp_path / "ddp", "flamingo", checkpoint)
    for name in ("val/retrieval/i2t_r1", "val/caption/cider_2shot", "val/vqa/acc_0shot"):
        assert name in whole
    assert sharded == pytest.approx(whole, abs=1e-6)
