"""Shared test fixtures: tiny encoders that build instantly offline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_TEXT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
TINY_VISION = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_vision():
    from vlp.encoders import VisionEncoder

    return VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION)


@pytest.fixture
def tiny_text():
    from vlp.encoders import TextEncoder

    return TextEncoder(config=TINY_TEXT, max_length=16)
