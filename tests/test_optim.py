"""Parameter groups: no decay on vectors and tokens, per-module learning-rate multipliers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.flamingo.tiny_lm import MEDIA_DIM, tiny_lm
from tests.tiny import TINY_VISION
from vlp.encoders import VisionEncoder
from vlp.flamingo import FlamingoLM, PerceiverResampler
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


def decayed_names(model: nn.Module) -> set[str]:
    groups = parameter_groups(model.named_parameters(), {})
    decayed = {id(p) for g in groups if "weight_decay" not in g for p in g["params"]}
    return {name for name, p in model.named_parameters() if id(p) in decayed}


def test_flamingo_decays_only_the_cross_attention_blocks_of_its_new_modules() -> None:
    # OpenFlamingo (spec §2.3): the resampler and the added token rows get no weight decay.
    lm, tokenizer = tiny_lm("gpt2")
    flamingo = nn.Module()
    flamingo.resampler = PerceiverResampler(dim=MEDIA_DIM, depth=1, heads=2, dim_head=4)
    flamingo.lm = FlamingoLM(lm, tokenizer, MEDIA_DIM, heads=2, dim_head=8, freeze_lm=False)
    decayed = decayed_names(flamingo)
    resampler = {f"resampler.{n}" for n, _ in flamingo.resampler.named_parameters()}
    assert "resampler.layers.0.ff.1.weight" in resampler and not decayed & resampler
    embedding, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    rows = {n for n, p in flamingo.named_parameters() if p is embedding.rows or p is head.rows}
    assert rows and not decayed & rows
    block = next(flamingo.lm.cross_attn_blocks())
    matrices = {n for n, p in flamingo.named_parameters()
                if any(p is q for q in (block.attn.to_q.weight, block.ff[1].weight))}  # fmt: skip
    assert len(matrices) == 2 and matrices <= decayed
    assert "lm.lm.transformer.h.0.decoder_layer.mlp.c_fc.weight" in decayed  # a trained LM's


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
