"""CoOp across runs: started from an ITC checkpoint, resumed, exported with its prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from tests.test_export import fit_then_export, tiny_config
from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer, tiny_data
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.captions import CLASS_NAMES
from vlp.datamodules.transforms import Augment
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import Schedule, VLPModule
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.coop import CoOp

CONTEXT = "objectives.1.prompt.context"


def model(seed: int, embed_dim: int = 8, coop: bool = True, **kwargs) -> VLPModule:
    torch.manual_seed(seed)
    objectives = [Contrastive(weight=0.0 if coop else 1.0, embed_dim=embed_dim)]
    if coop:
        objectives.append(CoOp(list(CLASS_NAMES), num_context=2))
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        objectives,
        **kwargs,
    )


@pytest.fixture(scope="module")
def itc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[VLPModule, str]:
    """Stage 1: two steps of ITC."""
    itc = model(seed=0, coop=False)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(itc, tiny_data(SyntheticScenes("train", 8, image_size=32), itc.tokenize))
    path = str(tmp_path_factory.mktemp("stage1") / "itc.ckpt")
    trainer.save_checkpoint(path)
    return itc, path


def test_coop_starts_from_the_itc_run_and_only_its_prompt_is_new(itc_checkpoint) -> None:
    itc, path = itc_checkpoint
    staged = model(seed=1, init_from=path).state_dict()
    fresh = model(seed=1).state_dict()
    trained = itc.state_dict()
    assert set(staged) == set(trained) | {CONTEXT}
    for key, value in trained.items():
        assert torch.equal(staged[key], value), key
        assert key == "objectives.0.temperature" or not torch.equal(fresh[key], value), key
    assert torch.equal(staged[CONTEXT], fresh[CONTEXT])


def test_a_checkpoint_of_another_shape_or_without_the_weights_is_refused(
    itc_checkpoint, tmp_path: Path
) -> None:
    _, path = itc_checkpoint
    with pytest.raises(ValueError, match=r"shapes differ: objectives\.0\.image_proj\.weight"):
        model(seed=0, embed_dim=16, init_from=path)
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"unrelated.weight": torch.zeros(1)}}, empty)
    with pytest.raises(ValueError, match=r"no weights under encoders\., objectives\. match"):
        model(seed=0, init_from=str(empty))


def fit_coop(epochs: int, checkpoints: Path, ckpt_path: str | None = None) -> VLPModule:
    """A constant learning rate, so a shorter run follows the same schedule as a longer one."""
    coop = model(seed=0, schedule=Schedule(min_lr_ratio=1.0))
    data = VLPDataModule(
        train=SyntheticScenes("train", 8, image_size=32),
        batch_size=4,
        num_workers=0,
        image_size=32,
        augment=Augment(crop_scale=None, brightness_contrast=0.0),
        tokenize=coop.tokenize,
    )
    trainer = quiet_trainer(
        max_epochs=epochs, enable_checkpointing=True, callbacks=[ModelCheckpoint(checkpoints)]
    )
    trainer.fit(coop, data, ckpt_path=ckpt_path)
    return coop


def test_the_context_is_checkpointed_and_a_resumed_run_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    uninterrupted = fit_coop(2, tmp_path / "a")
    first = fit_coop(1, tmp_path / "b")
    (checkpoint,) = (tmp_path / "b").glob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(saved[CONTEXT], first.state_dict()[CONTEXT])
    resumed = fit_coop(2, tmp_path / "c", ckpt_path=str(checkpoint))
    assert not torch.equal(resumed.state_dict()[CONTEXT], saved[CONTEXT])
    torch.testing.assert_close(
        resumed.state_dict()[CONTEXT], uninterrupted.state_dict()[CONTEXT], atol=1e-6, rtol=0
    )


def test_export_writes_the_learned_prompts(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "runs")
    config["model"].pop("fusion")
    config["model"]["objectives"] = [
        {"class_path": "vlp.objectives.contrastive.Contrastive",
         "init_args": {"weight": 0.0, "embed_dim": 16}},
        {"class_path": "vlp.objectives.coop.CoOp",
         "init_args": {"class_names": list(CLASS_NAMES), "num_context": 3}},
    ]  # fmt: skip
    checkpoint, out = fit_then_export(tmp_path, config, "coop")

    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    heads = load_file(out / "heads.safetensors")
    assert torch.equal(heads[CONTEXT], trained[CONTEXT])
    assert heads[CONTEXT].shape == (3, TINY_TEXT["hidden_size"])
    prompts = json.loads((out / "retrieval.json").read_text())["zeroshot_prompts"]
    assert prompts == {
        "context": CONTEXT,
        "class_specific": False,
        "template": "[P][P][P] {class}.",
        "class_names": list(CLASS_NAMES),
    }
