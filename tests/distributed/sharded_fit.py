"""Fit or validate a tiny model through the CLI on 2 CPU processes, each holding the whole
model (``ddp``) or a shard of every weight (``fsdp``: Lightning's ``ModelParallelStrategy``,
checkpoints saved whole).

Launched by ``test_sharded_cli.py`` as ``python -m tests.distributed.sharded_fit STRATEGY
ROOT MODEL [CHECKPOINT]`` so that Lightning's launcher can re-run it in each process.
MODEL is ``albef`` (the export test's momentum ITC with teachers and queues, and ITM) or
``flamingo`` (ITC beside a tiny Flamingo that captions and answers 0- and 2-shot). Without
CHECKPOINT it fits 2 epochs, validating before and after each (logger and checkpoint under
``ROOT/runs/tiny/version_0``); with one it
validates that checkpoint and rank 0 writes the metrics to ``ROOT/validate.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from tests.test_export import tiny_config
from tests.test_export_flamingo import flamingo_config
from vlp.cli import run_cli

STRATEGIES = {
    "ddp": "ddp",
    "fsdp": {
        "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
        "init_args": {
            "data_parallel_size": 2,
            "tensor_parallel_size": 1,
            "save_distributed_checkpoint": False,
        },
    },
}
MODELS = {"albef": tiny_config, "flamingo": flamingo_config}


def sharded_config(root: Path, strategy: str, model: str = "albef") -> Path:
    """The config file: 2 processes of batch 2 (the single-process config's global batch)."""
    config = MODELS[model](root / "runs")
    config["trainer"].update(devices=2, strategy=STRATEGIES[strategy])
    config["data"]["batch_size"] = 2
    # SGD: Adam would scale the rounding noise of zero-gradient weights (attention key
    # biases) up to whole steps, which differ with the order of the ranks' reductions
    config["model"]["optimizer"] = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}
    if model == "flamingo":
        config["model"]["objectives"][1]["init_args"]["fewshot"]["shots"] = [0, 2]
    path = root / f"{strategy}_{model}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main(strategy: str, root: Path, model: str, checkpoint: str | None = None) -> None:
    config = ["--config", str(sharded_config(root, strategy, model))]
    if checkpoint is None:
        run_cli(["fit", *config, "--trainer.max_epochs", "2"])  # validating between epochs
        return
    cli = run_cli(["validate", *config, "--trainer.limit_val_batches", "2",
                   "--ckpt_path", checkpoint])  # fmt: skip
    if cli.trainer.global_rank == 0:
        metrics = {name: float(value) for name, value in cli.trainer.callback_metrics.items()}
        (root / "validate.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
