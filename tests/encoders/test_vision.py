"""The timm vision tower: shapes for transformer and convnet families, local weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.tiny import TINY_VISION
from vlp.encoders import VisionEncoder


def test_vit_returns_pooled_patch_tokens_and_every_layer(tiny_vision) -> None:
    out = tiny_vision(torch.rand(2, 3, 32, 32))
    assert out.pooled.shape == (2, 32)
    assert out.tokens.shape == (2, 16, 32)  # (32 / 8)² patches, prefix token dropped
    assert len(out.hidden_states) == TINY_VISION["depth"]
    assert out.mask is None and out.token_mask.shape == (2, 16)


def test_image_size_is_configurable() -> None:
    encoder = VisionEncoder("vit_tiny_patch16_224", image_size=48, model_kwargs=TINY_VISION)
    assert encoder(torch.rand(1, 3, 48, 48)).tokens.shape[1] == 36


def test_convnets_work_too() -> None:
    encoder = VisionEncoder("resnet18", image_size=64)
    out = encoder(torch.rand(2, 3, 64, 64))
    assert out.pooled.shape == (2, 512) and out.tokens.shape == (2, 4, 512)


def test_local_checkpoint_is_loaded(tmp_path, tiny_vision) -> None:
    path = tmp_path / "vision.safetensors"
    save_file(tiny_vision.model.state_dict(), str(path))
    torch.manual_seed(123)
    reloaded = VisionEncoder(
        "vit_tiny_patch16_224", image_size=32, checkpoint_path=str(path), model_kwargs=TINY_VISION
    )
    images = torch.rand(2, 3, 32, 32)
    tiny_vision.eval(), reloaded.eval()
    assert torch.equal(tiny_vision(images).pooled, reloaded(images).pooled)


def test_unknown_model_name_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="no_such_model"):
        VisionEncoder("no_such_model")
