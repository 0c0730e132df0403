"""The throughput benchmark runs end to end on the quickstart config and reports sane numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from vlp.datamodules.mixture import DatasetTag, step_rows

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "experiments" / "quickstart.yaml"
# The in-memory synthetic scenes stand in for the files `make data` writes, so the
# tests need nothing on disk; the model is the quickstart's.
IN_MEMORY_DATA = [
    "--data.train="
    + json.dumps(
        {
            "class_path": "vlp.datamodules.synthetic.SyntheticScenes",
            "init_args": {"split": "train", "num_images": 48, "image_size": 64},
        }
    ),
    "--data.val=null",
    "--data.test=null",
    "--data.classes_file=null",
    "--data.num_workers=0",
]


def _throughput_module():
    # benchmarks/ is a folder of scripts, not a package: load the script by path.
    spec = importlib.util.spec_from_file_location(
        "throughput", ROOT / "benchmarks" / "throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_quickstart_reports_positive_rates_flops_and_mfu_below_one() -> None:
    throughput = _throughput_module()
    result = throughput.main(
        [
            "--config",
            str(QUICKSTART),
            "--steps=2",
            "--warmup=1",
            "--batch-size=8",
            "--data-batches=3",
            # One thread: on a shared CI machine two OpenMP threads can stall each other
            # for whole time slices, one thread only ever loses its share.
            "--threads=1",
            *IN_MEMORY_DATA,
        ]
    )
    assert result.batch_size == 8
    assert result.precision == "32-true"
    assert result.train_samples_per_s > 0
    assert result.data_samples_per_s > 0
    # ViT + BERT forward and backward: far more than the 2 × 8 × 128 × 128 of the logits alone.
    assert result.flops_per_step > 1e9
    # Achieved and peak FLOP/s are both measured, but the peak is the best of ten
    # large matmuls taken before and after training, while every training step also
    # pays for smaller matmuls, elementwise ops and the optimizer: MFU stays below 1
    # (about 0.65 at batch 8 and 0.8 at batch 64 on one idle core).
    assert 0 < result.mfu < 1
    assert result.peak_memory_bytes > 0
    assert 0 < result.trainable_params <= result.total_params
    # + AdamW's step counters
    assert result.state_bytes_per_rank == pytest.approx(
        full_state_bytes(result.trainable_params, result.total_params), abs=2**20
    )


def full_state_bytes(trainable: float, total: float) -> float:
    """fp32 weights, plus a gradient and AdamW's two moments for each trainable one."""
    return 4 * total + 3 * 4 * trainable


@pytest.mark.ddp
@pytest.mark.timeout(300)
def test_two_sharded_processes_each_keep_half_the_model_state() -> None:
    script = ROOT / "benchmarks" / "throughput.py"
    args = ["--config", str(QUICKSTART), "--devices=2", "--strategy=fsdp", "--steps=1",
            "--warmup=1", "--batch-size=4", "--data-batches=2", "--threads=1", *IN_MEMORY_DATA]  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=True,
        timeout=300, cwd=ROOT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert "2 (ModelParallelStrategy)" in run.stdout
    state_mib = re.search(r"model state per rank\D*([\d,.]+) MiB", run.stdout)[1]
    trainable, total = re.search(r"([\d.]+) M / ([\d.]+) M", run.stdout).groups()
    full = full_state_bytes(float(trainable) * 1e6, float(total) * 1e6)
    assert float(state_mib.replace(",", "")) * 2**20 == pytest.approx(full / 2, rel=0.02)


@pytest.mark.timeout(120)
def test_profile_lists_the_operators_of_the_timed_steps() -> None:
    result = _throughput_module().run(
        [
            "--config", str(QUICKSTART),
            "--steps=1", "--warmup=1", "--batch-size=4", "--data-batches=2", "--threads=1",
            "--profile=5",
            *IN_MEMORY_DATA,
        ]
    )  # fmt: skip
    # an operator's row ends with its number of calls
    rows = [line for line in result.profile.splitlines() if line.rstrip()[-1:].isdigit()]
    assert len(rows) == 5
    assert "aten::addmm" in result.profile or "aten::mm" in result.profile


def test_bf16_on_cpu_is_refused() -> None:
    throughput = _throughput_module()
    with pytest.raises(SystemExit, match="refusing precision"):
        throughput.run(
            ["--config", str(QUICKSTART), *IN_MEMORY_DATA, "--trainer.precision=bf16-mixed"]
        )


def test_cpu_attention_forward_flops_are_counted_as_two_matmuls() -> None:
    throughput = _throughput_module()
    batch, heads, length, width = 2, 3, 17, 8
    query, key, value = (torch.randn(batch, heads, length, width) for _ in range(3))
    with FlopCounterMode(display=False, custom_mapping=throughput.CPU_ATTENTION_FLOPS) as counter:
        F.scaled_dot_product_attention(query, key, value)
    # Q Kᵀ and softmax(·) V: two (L × E) @ (E × L)-sized matmuls per head, 2 FLOPs per MAC.
    assert counter.get_total_flops() == 2 * 2 * batch * heads * length * length * width


def test_a_mixture_step_is_one_batch_of_every_dataset_and_counts_all_their_samples() -> None:
    throughput = _throughput_module()
    pairs = [{"images": torch.zeros(4, 3, 2, 2), "dataset": DatasetTag("pairs", 0.2, None)}] * 3
    docs = [{"media": torch.zeros(2, 5, 1, 3, 2, 2), "dataset": DatasetTag("docs", 1.0, None)}]
    loaders = {
        name: DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
        for name, batches in (("pairs", pairs), ("docs", docs * 3))
    }
    mixture = CombinedLoader(loaders, mode="max_size_cycle")
    batches, rate = throughput.preload(mixture, 2, torch.device("cpu"))
    assert [sorted(batch) for batch in batches] == [["docs", "pairs"]] * 2
    assert [step_rows(batch) for batch in batches] == [6, 6]  # 4 images + 2 documents
    assert rate > 0
