"""``vlp export``: every artefact reloads with plain transformers, timm, safetensors and
onnxruntime and gives the trained module's embeddings."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.cli import COMMANDS, run_cli
from vlp.datamodules.transforms import eval_transform
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.export import export, last_metrics, model_card, retrieval_spec, run_folders
from vlp.module import VLPModule
from vlp.objectives.sigmoid import SigmoidContrastive

IMAGE_SIZE = 32
CAPTIONS = ["a red circle", "two small green squares above a blue star", "a triangle"]
ATOL = 1e-4


def fit_then_export(root: Path, config: dict, name: str = "config") -> tuple[Path, Path]:
    """Fit ``config`` (its logger saving under ``root/runs``) through the CLI, export its
    checkpoint through ``vlp export``; the checkpoint and the export folder."""
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    run_cli(["fit", "--config", str(path)])
    checkpoint = next((root / "runs/tiny/version_0/checkpoints").glob("*.ckpt"))
    out = root / "out"
    importlib.import_module(COMMANDS["export"]).main([str(checkpoint), str(out)])
    return checkpoint, out


def tiny_config(save_dir: Path) -> dict:
    """A CLI config with momentum ITC (teachers, queues) and ITM (fusion, head) on tiny towers."""
    scenes = "vlp.datamodules.synthetic.SyntheticScenes"
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(save_dir), "name": "tiny"},
            },
        },
        "model": {
            "vision_encoder": {
                "class_path": "vlp.encoders.VisionEncoder",
                "init_args": {
                    "name": "vit_tiny_patch16_224",
                    "image_size": IMAGE_SIZE,
                    "model_kwargs": TINY_VISION,
                },
            },
            "text_encoder": {
                "class_path": "vlp.encoders.TextEncoder",
                "init_args": {"config": TINY_TEXT, "max_length": 16},
            },
            "fusion": {"depth": 1, "heads": 2},
            "objectives": [
                {
                    "class_path": "vlp.objectives.momentum.MomentumContrastive",
                    "init_args": {"embed_dim": 16, "queue_size": 8},
                },
                {"class_path": "vlp.objectives.itm.ImageTextMatching"},
            ],
        },
        "data": {
            "train": {"class_path": scenes, "init_args": {"split": "train", "num_images": 8}},
            "val": {"class_path": scenes, "init_args": {"split": "val", "num_images": 8}},
            "batch_size": 4,
            "num_workers": 0,
            "image_size": IMAGE_SIZE,
        },
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[VLPModule, Path, Path]:
    """Fit two steps through the CLI, recomputing activations as a big run would (the
    export does without), and export the checkpoint through ``vlp export``."""
    root = tmp_path_factory.mktemp("export")
    config = root / "tiny.yaml"
    settings = tiny_config(root / "runs")
    settings["model"]["activation_checkpointing"] = True
    config.write_text(yaml.safe_dump(settings))
    run_cli(["fit", "--config", str(config)])
    run_dir = root / "runs/tiny/version_0"
    checkpoint = next((run_dir / "checkpoints").glob("*.ckpt"))
    out = root / "out"
    importlib.import_module(COMMANDS["export"]).main([str(checkpoint), str(out)])
    reference = run_cli(["--config", str(config)], run=False).model
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    reference.load_state_dict(state)
    return reference.eval(), out, run_dir


def images(count: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE)


def module_embeddings(model: VLPModule) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = model.tokenize(CAPTIONS)
    embedder = model.evaluator.embedder
    with torch.no_grad():
        image = model.encoders.vision(images(3))
        text = model.encoders.text(tokens["text_ids"], tokens["text_mask"])
        return embedder.embed_image(image), embedder.embed_text(text)


def test_hugging_face_text_encoder_and_heads_give_the_text_embeddings(exported) -> None:
    model, out, _ = exported
    heads = load_file(out / "heads.safetensors")
    spec = json.loads((out / "retrieval.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out / "text_encoder")
    encoder = AutoModel.from_pretrained(out / "text_encoder").eval()
    batch = tokenizer(CAPTIONS, padding="longest", return_tensors="pt")
    with torch.no_grad():
        cls = encoder(**batch).last_hidden_state[:, 0]
    proj = spec["text_projection"]
    text = F.normalize(F.linear(cls, heads[f"{proj}.weight"], heads[f"{proj}.bias"]), dim=-1)
    assert spec["text_pooling"] == "cls"
    assert torch.equal(batch["input_ids"], model.tokenize(CAPTIONS)["text_ids"])
    torch.testing.assert_close(text, module_embeddings(model)[1], atol=ATOL, rtol=0)


def test_timm_vision_encoder_and_heads_give_the_image_embeddings(exported) -> None:
    model, out, _ = exported
    heads = load_file(out / "heads.safetensors")
    spec = json.loads((out / "retrieval.json").read_text())
    encoder = timm.create_model(f"local-dir:{out / 'vision_encoder'}", pretrained=True).eval()
    with torch.no_grad():
        pooled = encoder(images(3))  # num_classes=0: the pooled pre-logits features
    proj = spec["image_projection"]
    image = F.normalize(F.linear(pooled, heads[f"{proj}.weight"], heads[f"{proj}.bias"]), dim=-1)
    assert list(encoder.pretrained_cfg["mean"]) == spec["mean"]
    torch.testing.assert_close(image, module_embeddings(model)[0], atol=ATOL, rtol=0)


def test_timm_preprocessing_of_the_export_is_the_evaluation_transform(exported) -> None:
    _, out, _ = exported
    spec = json.loads((out / "retrieval.json").read_text())
    encoder = timm.create_model(f"local-dir:{out / 'vision_encoder'}", pretrained=True)
    timm_transform = timm.data.create_transform(**timm.data.resolve_data_config(model=encoder))
    torch.manual_seed(2)
    image = Image.fromarray((torch.rand(45, 70, 3) * 255).to(torch.uint8).numpy())
    ours = eval_transform(IMAGE_SIZE, spec["mean"], spec["std"])(image)
    # PIL's and torchvision's antialiased bilinear resizes round apart by at most one level
    one_level = 1.01 / 255 / torch.tensor(spec["std"])[:, None, None]
    assert ((timm_transform(image) - ours).abs() <= one_level).all()
    card = (out / "README.md").read_text()
    assert f"shorter side is {IMAGE_SIZE} px,\ncentre-cropped to {IMAGE_SIZE}×{IMAGE_SIZE}" in card


def test_onnx_towers_give_the_embeddings_at_other_batch_sizes_and_lengths(exported) -> None:
    model, out, _ = exported
    image_ref, text_ref = module_embeddings(model)
    image_tower = onnxruntime.InferenceSession(str(out / "image_tower.onnx"))
    (image,) = image_tower.run(None, {"images": images(3).numpy()})
    np.testing.assert_allclose(image, image_ref.numpy(), atol=ATOL, rtol=0)
    text_tower = onnxruntime.InferenceSession(str(out / "text_tower.onnx"))
    tokens = model.tokenize(CAPTIONS)
    assert tokens["text_ids"].shape[1] != 2  # not the export's example length
    (text,) = text_tower.run(None, {k: v.numpy() for k, v in tokens.items()})
    np.testing.assert_allclose(text, text_ref.numpy(), atol=ATOL, rtol=0)
    (one,) = text_tower.run(None, {k: v[:1, :4].numpy() for k, v in tokens.items()})
    assert one.shape == (1, image.shape[1])


def test_heads_hold_every_inference_weight_and_no_training_state(exported) -> None:
    model, out, _ = exported
    heads = load_file(out / "heads.safetensors")
    state = model.state_dict()
    for key, value in heads.items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)
    assert {"objectives.0.temperature", "objectives.1.head.weight"} <= set(heads)
    spec = json.loads((out / "retrieval.json").read_text())
    assert spec["temperature"] == "objectives.0.temperature"
    assert any(key.startswith("encoders.fusion.") for key in heads)
    towers_and_teachers = ("encoders.vision.model.", "encoders.text.model.", "teachers.")
    assert not any(key.startswith(towers_and_teachers) for key in heads)
    assert not any("_queue." in key or "_proj_m." in key for key in heads)


def test_every_exported_file_has_the_mode_of_a_plain_write(exported) -> None:
    _, out, _ = exported
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert "heads.safetensors" in modes and "model.safetensors" in modes  # 0600 from safetensors
    assert set(modes.values()) == {0o666 & ~umask}


def test_config_and_model_card_come_from_the_run(exported) -> None:
    _, out, run_dir = exported
    assert (out / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    card = (out / "README.md").read_text()
    loss = last_metrics([run_dir])["train/loss"][0]
    assert f"| `train/loss` | {float(loss):.4g} |" in card
    assert "| `objectives.0.temperature` | [] |" in card


def test_a_sigmoid_space_names_its_scale_and_bias_for_the_readers() -> None:
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=IMAGE_SIZE, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [SigmoidContrastive(embed_dim=16)],
    )
    data = {"image_size": IMAGE_SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}
    spec = retrieval_spec(model, model.evaluator.embedder, data)
    assert (spec["log_scale"], spec["bias"]) == ("objectives.0.log_scale", "objectives.0.bias")
    assert "temperature" not in spec
    assert {spec["log_scale"], spec["bias"], f"{spec['image_projection']}.weight"} <= set(
        model.state_dict()
    )


def test_model_card_says_when_no_metrics_were_found() -> None:
    config = {"model": {"objectives": [{"class_path": "Contrastive"}]}}
    spec = {k: "" for k in ("image_size", "image_projection", "text_projection", "text_pooling")}
    card = model_card(config, {}, {}, {**spec, "mean": (), "std": (), "max_length": 1})
    assert "No `metrics.csv` was found" in card


def test_export_without_a_run_folder_asks_for_the_config(tmp_path: Path) -> None:
    checkpoint = tmp_path / "a/b/last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    with pytest.raises(FileNotFoundError, match="--run_config"):
        importlib.import_module(COMMANDS["export"]).main([str(checkpoint), str(tmp_path / "o")])


def test_run_folders_follow_both_checkpoint_layouts(tmp_path: Path) -> None:
    default = tmp_path / "a/version_3"  # Lightning's default: <run>/version_<n>/checkpoints/
    (default / "checkpoints").mkdir(parents=True)
    (default / "config.yaml").touch()
    assert run_folders(default / "checkpoints/last.ckpt") == [default]
    run = tmp_path / "quickstart"  # ModelCheckpoint(dirpath=<run>/checkpoints) beside the versions
    for version in (10, 2, 0):
        (run / f"version_{version}").mkdir(parents=True)
        (run / f"version_{version}/config.yaml").touch()
    (run / "version_11").mkdir()  # no config: not a run folder
    found = run_folders(run / "checkpoints/last.ckpt")
    assert [p.name for p in found] == ["version_0", "version_2", "version_10"]


def test_a_sweep_run_folder_gives_the_metrics_of_its_fits_and_test(tmp_path: Path) -> None:
    run = tmp_path / "sweep/itc_s0"  # vlp.sweep_run's layout
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").touch()
    (run / "run.json").write_text("{}")
    logs = {
        "fit": "epoch,step,train/loss,val/acc\n0,9,0.5,\n0,9,,0.1\n",
        "fit_resumed2": "epoch,step,train/loss\n1,19,0.25\n",
        "fit_resumed10": "epoch,step,train/loss\n2,29,0.125\n",  # the latest resume
        "test": "epoch,step,test/acc\n0,0,0.75\n",
    }
    for folder, rows in logs.items():
        (run / folder).mkdir()
        (run / folder / "metrics.csv").write_text(rows)
    folders = run_folders(run / "checkpoints/last.ckpt")
    assert folders == [run]
    assert last_metrics(folders) == {
        "train/loss": ("0.125", "29", "fit_resumed10/metrics.csv"),
        "val/acc": ("0.1", "9", "fit/metrics.csv"),
        "test/acc": ("0.75", "0", "test/metrics.csv"),
    }


def test_a_sharded_checkpoint_folder_is_refused_with_the_setting_that_saves_it_whole(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "runs")))
    (tmp_path / "epoch=0-step=2.ckpt").mkdir()  # what save_distributed_checkpoint writes
    with pytest.raises(ValueError, match="save_distributed_checkpoint: false"):
        export(tmp_path / "epoch=0-step=2.ckpt", tmp_path / "out", config)
