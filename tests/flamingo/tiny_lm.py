"""Tiny causal LMs of several Hugging Face families, built offline around the MiniLM tokenizer."""

from __future__ import annotations

import copy
from functools import cache

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from vlp.encoders.text import MINILM
from vlp.paths import resolve_model_path

# Two layers of width 32, no dropout. GPT-2 and OPT tie input and output embeddings;
# Llama and GPT-NeoX do not.
FAMILIES = {
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "opt": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 64,
            "word_embed_proj_dim": 32, "max_position_embeddings": 64, "dropout": 0.0},
    "llama": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "intermediate_size": 64, "max_position_embeddings": 64},
    "gpt_neox": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 64},
}  # fmt: skip
MEDIA_DIM = 16


@cache
def _minilm_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_model_path(MINILM))


def tiny_lm(family: str, **sizes: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised (seed 0) LM of ``family`` and a fresh copy of its tokenizer."""
    tokenizer = copy.deepcopy(_minilm_tokenizer())
    special = {
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    sizes = {"vocab_size": len(tokenizer), **FAMILIES[family], **sizes}
    config = AutoConfig.for_model(family, **special, **sizes)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config), tokenizer
