"""Every shipped YAML goes through the real CLI; the quickstart runs end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlp.cli import VLPCLI, run_cli
from vlp.data_command import write_synthetic
from vlp.datamodules.datamodule import VLPDataModule
from vlp.module import VLPModule

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs/experiments/quickstart.yaml"
PRETRAIN = ROOT / "configs/experiments/pretrain_tiny.yaml"
EXPERIMENTS = sorted((ROOT / "configs/experiments").glob("*.yaml"))
FRAGMENTS = sorted((ROOT / "configs/model").glob("*.yaml"))
OBJECTIVE_SETS = sorted((ROOT / "configs/objectives").glob("*.yaml"))
DATA_SOURCES = sorted((ROOT / "configs/data").glob("*.yaml"))
EMBEDDERS = ("contrastive", "momentum", "tcl")  # objective modules defining an image–text space
TINY_RUN = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.log_every_n_steps=1",
    "--data.batch_size=8",
    "--data.num_workers=0",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a small copy of the embedded data where configs expect it."""
    root = tmp_path_factory.mktemp("work")
    write_synthetic(root / "data/scenes", train=48, val=16, test=16)
    return root


class ParseOnly(VLPCLI):
    """The real parser and validation, without building models (hub weights are offline)."""

    def instantiate_classes(self) -> None:
        pass


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_builds_through_the_cli(config: Path, workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    cli = run_cli(["--config", str(config)], run=False)
    assert cli.model.objectives and cli.datamodule.tokenize is cli.model.tokenize


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: p.stem)
def test_every_model_fragment_parses_over_the_quickstart(fragment: Path) -> None:
    cli = ParseOnly(
        VLPModule,
        VLPDataModule,
        parser_kwargs={"parser_mode": "omegaconf"},
        args=["--config", str(QUICKSTART), "--model", str(fragment)],
        run=False,
    )
    assert cli.config.model.vision_encoder.class_path.endswith("VisionEncoder")


@pytest.mark.parametrize("objectives", OBJECTIVE_SETS, ids=lambda p: p.stem)
def test_every_objective_set_trains_end_to_end(
    objectives: Path, workdir: Path, monkeypatch
) -> None:
    """The tiny CPU variant of each comparison config: a few steps, then validation."""
    monkeypatch.chdir(workdir)
    name = objectives.stem
    run_cli(
        ["fit", "--config", str(PRETRAIN), "--model.objectives", str(objectives), *TINY_RUN,
         f"--trainer.logger.init_args.name={name}"]
    )  # fmt: skip
    rows = read_metrics(workdir / "runs" / name / "version_0")
    assert last_value(rows, "train/loss") > 0
    assert 0 <= last_value(rows, "val/linear_probe/acc") <= 1
    if any(f"vlp.objectives.{module}." in objectives.read_text() for module in EMBEDDERS):
        assert 0 <= last_value(rows, "val/retrieval/i2t_r1") <= 1
    if "itm" in objectives.read_text().lower():
        assert 0 <= last_value(rows, "val/retrieval_itm/t2i_r1") <= 1
        assert 0 <= last_value(rows, "val/compositional/itm_acc") <= 1


@pytest.mark.parametrize("source", DATA_SOURCES, ids=lambda p: p.stem)
def test_every_data_source_builds_over_the_quickstart(
    source: Path, workdir: Path, monkeypatch
) -> None:
    monkeypatch.chdir(workdir)
    cli = run_cli(["--config", str(QUICKSTART), "--data.predict", str(source)], run=False)
    assert len(cli.datamodule.sources["predict"]) > 0


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict[str, str]], name: str) -> float:
    return [float(r[name]) for r in rows if r.get(name)][-1]


def test_quickstart_fits_then_tests_from_its_checkpoint(workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    run_cli(["fit", "--config", str(QUICKSTART), *TINY_RUN])
    fit_dir = workdir / "runs/quickstart/version_0"
    assert (fit_dir / "config.yaml").exists()
    fit_rows = read_metrics(fit_dir)
    assert last_value(fit_rows, "train/itc/contrastive_loss") > 0
    assert last_value(fit_rows, "data/skipped_corrupt") == 0
    checkpoint = workdir / "runs/quickstart/checkpoints/last.ckpt"
    run_cli(["test", "--config", str(QUICKSTART), "--ckpt_path", str(checkpoint), *TINY_RUN])
    test_rows = read_metrics(workdir / "runs/quickstart/version_1")
    for name in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert 0.0 <= last_value(test_rows, f"test/retrieval/{name}") <= 1.0
    assert 0.0 <= last_value(test_rows, "test/zeroshot/acc") <= 1.0
    run_cli(
        [
            "predict",
            "--config",
            str(QUICKSTART),
            "--ckpt_path",
            str(checkpoint),
            *TINY_RUN,
            f"--data.predict={ROOT / 'configs/data/scenes_test.yaml'}",
        ]
    )
    embeddings = load_file(workdir / "runs/quickstart/predictions/embeddings_rank0.safetensors")
    assert embeddings["image_embeddings"].shape[0] == 16
    assert embeddings["text_embeddings"].shape[0] == embeddings["text_image_ids"].shape[0] == 16 * 5
    clips = [f"--data.test={ROOT / 'configs/data/clips_test.yaml'}", "--data.test.num_clips=12"]
    clips.append("--trainer.logger.init_args.version=clips")
    run_cli(
        ["test", "--config", str(QUICKSTART), "--ckpt_path", str(checkpoint), *TINY_RUN, *clips]
    )
    clip_rows = read_metrics(workdir / "runs/quickstart/clips")
    assert 0.0 <= last_value(clip_rows, "test/video_retrieval/t2v_r1") <= 1.0
    assert not any(row.get("test/retrieval/i2t_r1") for row in clip_rows)
    # a rerun (a second `make demo`) leaves its own checkpoint as last.ckpt, not last-v1.ckpt
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    run_cli(["fit", "--config", str(QUICKSTART), *TINY_RUN, "--trainer.limit_train_batches=1"])
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 1


def test_same_seed_gives_same_metrics(workdir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    runs = []
    for name in ("a", "b"):
        run_cli(
            [
                "fit",
                "--config",
                str(QUICKSTART),
                *TINY_RUN,
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                f"--trainer.logger.init_args.name={name}",
            ]
        )
        runs.append(read_metrics(tmp_path / name / "version_0"))
    for metric in ("train/loss", "val/retrieval/i2t_r5", "val/zeroshot/acc"):
        assert last_value(runs[0], metric) == last_value(runs[1], metric), metric
