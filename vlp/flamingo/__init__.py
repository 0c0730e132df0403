"""Flamingo (Alayrac et al., 2022): a frozen causal LM reading interleaved images and text.

Resampled image tokens (:mod:`.resampler`) enter the LM through gated cross-attention
blocks (:mod:`.cross_attention`) placed before its decoder layers (:mod:`.lm`); each
text token sees only the last image before it, or optionally all of them
(:mod:`.media_mask`).
"""

from vlp.flamingo.cross_attention import GatedCrossAttentionBlock
from vlp.flamingo.lm import FlamingoLM
from vlp.flamingo.loss import flamingo_labels, lm_loss, predicting_positions
from vlp.flamingo.media_mask import media_attention_mask, media_index
from vlp.flamingo.resampler import PerceiverResampler
from vlp.flamingo.tokens import (
    END_OF_CHUNK,
    IMAGE,
    FlamingoTokens,
    add_flamingo_tokens,
    literal_fields,
    literal_text,
)

__all__ = [
    "END_OF_CHUNK",
    "IMAGE",
    "FlamingoLM",
    "FlamingoTokens",
    "GatedCrossAttentionBlock",
    "PerceiverResampler",
    "add_flamingo_tokens",
    "flamingo_labels",
    "literal_fields",
    "literal_text",
    "lm_loss",
    "media_attention_mask",
    "media_index",
    "predicting_positions",
]
