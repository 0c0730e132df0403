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


def test_masked_patches_become_the_mask_token_before_position_embeddings(tiny_vision) -> None:
    tiny_vision.eval()
    images = torch.rand(2, 3, 32, 32)
    before = tiny_vision(images)
    tiny_vision.add_mask_token()
    assert torch.equal(tiny_vision(images).tokens, before.tokens)  # no mask: unchanged
    mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    vit = tiny_vision.model
    # By hand: patch embeddings, masked ones swapped, then timm's usual path.
    x = vit.patch_embed(images)
    x = torch.where(mask[..., None], tiny_vision.mask_token, x)
    x = vit.norm_pre(vit._pos_embed(x))
    hidden = []
    for block in vit.blocks:
        x = block(x)
        hidden.append(x[:, 1:])
    masked = tiny_vision(images, mask)
    assert torch.allclose(masked.tokens, vit.norm(x)[:, 1:], atol=1e-6)
    assert torch.allclose(masked.hidden_states[-1], hidden[-1], atol=1e-6)
    assert tiny_vision.patch_grid == (4, 4)


def test_fully_masked_images_are_indistinguishable(tiny_vision) -> None:
    tiny_vision.add_mask_token()
    everything = torch.ones(2, 16, dtype=torch.bool)
    out = tiny_vision.eval()(torch.rand(2, 3, 32, 32), everything)
    assert torch.allclose(out.tokens[0], out.tokens[1], atol=1e-6)


def test_masking_needs_the_mask_token_which_is_made_only_on_request(tiny_vision) -> None:
    assert "mask_token" not in dict(tiny_vision.named_parameters())
    with pytest.raises(ValueError, match="add_mask_token"):
        tiny_vision(torch.rand(1, 3, 32, 32), torch.ones(1, 16, dtype=torch.bool))


def test_ffn_modules_give_each_blocks_mlp_output_before_the_residual(tiny_vision) -> None:
    tiny_vision.eval()
    images = torch.rand(2, 3, 32, 32)
    recorded = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: recorded.append(o))
        for m in tiny_vision.ffn_modules()
    ]
    out = tiny_vision(images)
    for hook in hooks:
        hook.remove()
    vit = tiny_vision.model
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    for block, ffn, hidden in zip(vit.blocks, recorded, out.hidden_states, strict=True):
        after_attention = x + block.ls1(block.attn(block.norm1(x)))
        x = block(x)
        assert torch.allclose(ffn, x - after_attention, atol=1e-5)
        assert torch.allclose(hidden, x[:, 1:], atol=1e-6)
