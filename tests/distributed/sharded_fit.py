"""Fit the export test's tiny config (momentum ITC with teachers and queues, ITM) through
the CLI on 2 CPU processes, each holding the whole model (``ddp``) or a shard of every
weight (``fsdp``: Lightning's ``ModelParallelStrategy``, checkpoints saved whole).

Launched by ``test_sharded_cli.py`` as ``python -m tests.distributed.sharded_fit STRATEGY
ROOT``, so that Lightning's launcher can re-run it in each process; the run's logger and
checkpoint go under ``ROOT/runs/tiny/version_0``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from tests.test_export import tiny_config
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


def sharded_config(root: Path, strategy: str) -> Path:
    """The config file: 2 processes of batch 2 (the single-process config's global batch)."""
    config = tiny_config(root / "runs")
    config["trainer"].update(
        devices=2, strategy=STRATEGIES[strategy], limit_val_batches=0, num_sanity_val_steps=0
    )
    config["data"]["batch_size"] = 2
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


if __name__ == "__main__":
    strategy, root = sys.argv[1], Path(sys.argv[2])
    run_cli(["fit", "--config", str(sharded_config(root, strategy))])
