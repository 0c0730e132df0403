"""The throughput benchmark runs end to end on the quickstart config and reports sane numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

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
