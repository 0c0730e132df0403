"""A tiny Flamingo objective (2-layer GPT-2 of width 32, MiniLM vocabulary) and data for it."""

from __future__ import annotations

import torch

from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.datamodule import VLPDataModule
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.encoders.text import MINILM
from vlp.module import VLPModule
from vlp.objectives.base import Objective
from vlp.objectives.flamingo import CrossAttentionConfig, Flamingo, ResamplerConfig

TINY_LM = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64,
           "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}  # fmt: skip
IMAGE_SIZE = 32


def tiny_flamingo(**kwargs) -> Flamingo:
    """A 1-layer Flamingo whose random LM stands in for a pretrained one: frozen, as in the paper."""
    options = {
        "freeze_lm": True,
        "lm_config": TINY_LM,
        "tokenizer": MINILM,
        "document_max_length": 64,
        "resampler": ResamplerConfig(depth=1, heads=2, dim_head=8, num_latents=4),
        "cross_attention": CrossAttentionConfig(heads=2, dim_head=8),
        **kwargs,
    }
    return Flamingo(**options)


def tiny_model(objectives: list[Objective], **kwargs) -> VLPModule:
    torch.manual_seed(0)
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=IMAGE_SIZE, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        objectives,
        **kwargs,
    )


def tiny_data(model: VLPModule, **kwargs) -> VLPDataModule:
    """The model's data module as the CLI would link it: 32 px, batches of 4, no workers."""
    options = {"batch_size": 4, "num_workers": 0, "image_size": IMAGE_SIZE, **kwargs}
    return VLPDataModule(
        tokenize=model.tokenize, lm_tokenize=model.lm_tokenize, needs=model.batch_needs, **options
    )


def open_gates(objective: Flamingo) -> None:
    """tanh(α) = tanh(1) instead of 0, so the media change the logits."""
    with torch.no_grad():
        for block in objective.lm.cross_attn_blocks():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)
