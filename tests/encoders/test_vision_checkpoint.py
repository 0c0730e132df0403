"""Staged training: a vision tower starts from the one in an earlier vlp checkpoint."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer, tiny_data
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive


def tiny_vision(**kwargs) -> VisionEncoder:
    return VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION, **kwargs)


def test_the_tower_of_a_trained_checkpoint_is_loaded_weights_only(tmp_path):
    torch.manual_seed(0)
    model = VLPModule(tiny_vision(), TextEncoder(config=TINY_TEXT), [Contrastive(embed_dim=8)])
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, tiny_data(SyntheticScenes("train", 8, image_size=32), model.tokenize))
    path = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(path)

    torch.manual_seed(1)
    loaded = tiny_vision(checkpoint_path=str(path)).model.state_dict()
    trained = model.encoders.vision.model.state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    fresh = tiny_vision().model.state_dict()
    assert not all(torch.equal(fresh[k], trained[k]) for k in trained)


def test_a_checkpoint_without_a_vision_tower_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoders.text.model.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="no vision encoder weights"):
        tiny_vision(checkpoint_path=str(path))
