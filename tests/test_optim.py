"""Parameter groups: no decay on vectors and tokens, per-module learning-rate multipliers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.tiny import TINY_VISION
from vlp.encoders import VisionEncoder
from vlp.flamingo import PerceiverResampler
from vlp.optim import apply_lr_multipliers, parameter_groups, warmup_cosine


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text = nn.Linear(2, 2)
        self.vision = nn.Linear(2, 2)
        self.temperature = nn.Parameter(torch.tensor(0.07))
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 2))


def test_groups_split_decay_and_multipliers() -> None:
    model = Toy()
    optimizer = torch.optim.AdamW(
        parameter_groups(model.named_parameters(), {"text": 0.1}), lr=1.0, weight_decay=0.5
    )
    apply_lr_multipliers(optimizer)
    settings = {
        name: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for name, p in model.named_parameters()
        if any(p is q for q in group["params"])
    }
    assert settings["text.weight"] == (pytest.approx(0.1), 0.5)
    assert settings["text.bias"] == (pytest.approx(0.1), 0.0)
    assert settings["vision.weight"] == (1.0, 0.5)
    assert settings["temperature"] == (1.0, 0.0)
    assert settings["pos_embed"] == (1.0, 0.0)


def test_resampler_latents_and_time_embeddings_are_not_decayed() -> None:
    resampler = PerceiverResampler(dim=8, depth=1, heads=2, dim_head=4, num_latents=3)
    decayed = [
        p for g in parameter_groups(resampler.named_parameters(), {}) if "weight_decay" not in g
        for p in g["params"]
    ]  # fmt: skip
    for token in (resampler.latents, resampler.media_time, resampler.frame_time):
        assert all(p is not token for p in decayed)
    assert any(p is resampler.layers[0].ff[1].weight for p in decayed)


def test_vision_tokens_are_not_decayed_and_its_matrices_are() -> None:
    vision = VisionEncoder("deit_tiny_distilled_patch16_224", image_size=32,
                           model_kwargs=TINY_VISION)  # fmt: skip
    vision.add_mask_token()
    decayed = {
        id(p) for g in parameter_groups(vision.named_parameters(), {}) if "weight_decay" not in g
        for p in g["params"]
    }  # fmt: skip
    model = vision.model
    for token in (vision.mask_token, model.dist_token, model.cls_token, model.pos_embed):
        assert token.ndim == 3 and id(token) not in decayed
    assert id(model.patch_embed.proj.weight) in decayed


def test_frozen_parameters_are_left_out() -> None:
    model = Toy()
    model.text.requires_grad_(False)
    params = [p for g in parameter_groups(model.named_parameters(), {}) for p in g["params"]]
    assert all(p is not model.text.weight for p in params)


def test_warmup_then_cosine() -> None:
    factor = warmup_cosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55)
    assert factor(110) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)
