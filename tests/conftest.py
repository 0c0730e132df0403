"""Shared test fixtures: tiny encoders that build instantly offline."""

from __future__ import annotations

import os

import pytest
import torch

from tests.tiny import TINY_TEXT, TINY_VISION

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
