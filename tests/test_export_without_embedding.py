"""``vlp export`` of models without an image–text embedding (data2vec alone, Flamingo alone):
the towers, heads, Flamingo files, config and card are written; the retrieval files are not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.test_export import fit_then_export, images, tiny_config
from tests.test_export_flamingo import flamingo_config
from vlp.cli import run_cli
from vlp.module import VLPModule

RETRIEVAL_FILES = ("retrieval.json", "image_tower.onnx", "text_tower.onnx")
NO_TOWERS = "No image–text embedding objective: no retrieval towers"


def data2vec_vision_config(save_dir: Path) -> dict:
    """data2vec on image patches alone, sized for the 2-layer ViT's 4×4 patch grid."""
    config = tiny_config(save_dir)
    config["model"].pop("fusion")
    config["model"]["objectives"] = [
        {"class_path": "vlp.objectives.data2vec.Data2Vec",
         "init_args": {"modality": "image",
                       "image": {"mask_ratio": 0.5, "min_block": 2, "targets": {"top_k": 2}},
                       "ema": {"start": 0.99, "end": 0.999, "steps": 10}}},
    ]  # fmt: skip
    return config


def fit_and_export(root: Path, config: dict) -> tuple[VLPModule, Path]:
    """Fit two steps through the CLI, export through ``vlp export``; the trained module too."""
    checkpoint, out = fit_then_export(root, config)
    model = run_cli(["--config", str(root / "config.yaml")], run=False).model
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model.eval(), out


@pytest.fixture(scope="module")
def data2vec_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[VLPModule, Path]:
    root = tmp_path_factory.mktemp("export_data2vec")
    return fit_and_export(root, data2vec_vision_config(root / "runs"))


def test_data2vec_timm_tower_gives_the_module_pooled_features(data2vec_export) -> None:
    model, out = data2vec_export
    encoder = timm.create_model(f"local-dir:{out / 'vision_encoder'}", pretrained=True).eval()
    with torch.no_grad():
        pooled = encoder(images(3))
        expected = model.encoders.vision(images(3)).pooled
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)
    assert (out / "text_encoder/config.json").is_file()


def test_data2vec_heads_hold_regression_head_and_mask_token_only(data2vec_export) -> None:
    model, out = data2vec_export
    heads = load_file(out / "heads.safetensors")
    state = model.state_dict()
    assert "encoders.vision.mask_token" in heads
    assert any(key.startswith("objectives.0.image_head.") for key in heads)
    for key, value in heads.items():
        assert torch.equal(value, state[key]), key
    assert not any(key.startswith(("teachers.", "encoders.vision.model.")) for key in heads)


def test_data2vec_export_has_no_retrieval_files_and_the_card_says_why(data2vec_export) -> None:
    _, out = data2vec_export
    assert not any((out / name).exists() for name in RETRIEVAL_FILES)
    assert not (out / "language_model").exists()
    card = (out / "README.md").read_text()
    assert NO_TOWERS in card
    assert "`retrieval.json` |" not in card and "| `heads.safetensors` |" in card
    assert (out / "config.yaml").is_file()


@pytest.mark.parametrize("prompted", [False, True], ids=["flamingo", "ptuned"])
def test_flamingo_alone_exports_its_language_model(tmp_path: Path, prompted: bool) -> None:
    """Without retrieval.json, a P-tuned Flamingo's templates go to flamingo.json."""
    config = flamingo_config(tmp_path / "runs")
    flamingo = config["model"]["objectives"][1]  # drop ITC
    if prompted:
        flamingo["class_path"] = "vlp.objectives.flamingo_ptuning.FlamingoPromptTuning"
        flamingo["init_args"]["tasks"] = ["caption"]
    config["model"]["objectives"] = [flamingo]
    config["trainer"]["limit_val_batches"] = 0  # few-shot validation is slow and beside the point
    model, out = fit_and_export(tmp_path, config)
    lm = AutoModelForCausalLM.from_pretrained(out / "language_model")
    assert type(lm) is type(model.objectives[0].lm.lm)
    assert (out / "flamingo.safetensors").is_file()
    assert not any((out / name).exists() for name in RETRIEVAL_FILES)
    card = (out / "README.md").read_text()
    assert NO_TOWERS in card and "| `language_model/` |" in card
    spec = json.loads((out / "flamingo.json").read_text())
    if prompted:
        vectors = spec["generation_prompts"]["caption"]["vectors"]
        assert vectors == "objectives.0.prompt_vectors.caption"
        assert vectors in load_file(out / "heads.safetensors")
    else:
        assert "generation_prompts" not in spec
