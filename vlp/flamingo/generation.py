"""Text from a Flamingo LM for prompts with images: captions and short answers.

The images are resampled once by the caller and stay fixed while Hugging Face
``generate`` decodes greedily or by beam search; the LM's media conditioning gives
each new token the last image of its prompt (``shared/specs/flamingo.md`` §5.2).
Prompts are padded on the left, so every row's next token sits at the same position.

A learned prefix (P-tuning v2's deep prompts) enters as ``generate``'s pre-filled cache.
``generate`` takes a cache's length as the number of prompt tokens it already holds, so
the prompt ids get as many placeholder tokens in front: ``generate`` skips them, and only
the real prompt reaches the LM, at positions after the prefix, as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from vlp.flamingo.lm import FlamingoLM
from vlp.flamingo.tokens import IMAGE
from vlp.prompting.deep_prompts import DeepPrompts


@dataclass(frozen=True)
class Decoding:
    """How continuations are decoded (OpenFlamingo's evaluation: 3 beams, no length penalty,
    20 new tokens for captions, 5 for VQA answers). Decoding stops at ``<|endofchunk|>``
    or the LM's EOS. ``use_cache`` reuses past keys/values; off recomputes every step."""

    max_new_tokens: int = 20
    num_beams: int = 3
    length_penalty: float = 0.0
    use_cache: bool = True


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Left-padded ``ids`` and ``mask`` [B, L] of ``prompts``.

    A prompt starts with whatever the tokenizer puts before a text (a BOS, a [CLS]), as
    the training sequences do, and ends where its text ends: no EOS/[SEP] is appended.
    """
    framed = tokenizer(IMAGE)["input_ids"]
    prefix = framed[: framed.index(tokenizer.convert_tokens_to_ids(IMAGE))]
    rows = [prefix + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(row) for row in rows)
    ids = [[tokenizer.pad_token_id] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    return torch.tensor(ids), torch.tensor(mask)


@torch.no_grad()
def generate(
    lm: FlamingoLM, visual: Tensor, prompts: Sequence[str], decoding: Decoding = Decoding()
) -> list[str]:
    """The continuation of each prompt given its resampled images ``visual`` [B, T, n, D]
    (image t of a row is the one its t-th ``<image>`` stands for), special tokens removed.

    Beam search expands each row into ``num_beams`` rows, so the images are repeated to
    match. ``<image>`` is never generated: a new image tag would have no image behind it.
    """
    ids, mask = prompt_ids(lm.tokenizer, prompts)
    return generate_from_ids(lm, visual, ids, mask, decoding)


@torch.no_grad()
def generate_from_ids(
    lm: FlamingoLM,
    visual: Tensor,
    ids: Tensor,
    mask: Tensor,
    decoding: Decoding = Decoding(),
    prefix: DeepPrompts | None = None,
) -> list[str]:
    """:func:`generate` for prompts already tokenised: left-padded ``ids`` and ``mask`` [B, L]
    (e.g. templates whose continuous prompts are spliced into the LM's embeddings), after
    a learned ``prefix`` in every layer if one is given."""
    tokenizer, tokens = lm.tokenizer, lm.tokens
    ids, mask = ids.to(visual.device), mask.to(visual.device)
    prefixed: dict[str, Any] = {}
    if prefix is not None:
        if not decoding.use_cache:
            raise ValueError("a learned prefix lives in the KV cache: decode with use_cache")
        placeholders = ids.new_full((ids.shape[0], prefix.length), tokenizer.pad_token_id)
        ids = torch.cat([placeholders, ids], dim=1)
        mask = torch.cat([torch.ones_like(placeholders), mask], dim=1)
        prefixed["cache"] = prefix.cache(ids.shape[0] * decoding.num_beams)
    longest = getattr(lm.lm.config.get_text_config(), "max_position_embeddings", None)
    if longest is not None and ids.shape[1] + decoding.max_new_tokens > longest:
        raise ValueError(
            f"prompts of {ids.shape[1]} tokens + {decoding.max_new_tokens} new ones exceed the "
            f"LM's {longest} positions: use fewer shots or a shorter max_new_tokens"
        )
    stops = [tokens.end_of_chunk, *_ids(lm.lm.config.get_text_config().eos_token_id)]
    beams_visual = visual.repeat_interleave(decoding.num_beams, dim=0)
    with lm.conditioned_on(beams_visual, 0 if prefix is None else prefix.length):
        out = lm.lm.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            num_beams=decoding.num_beams,
            **({"length_penalty": decoding.length_penalty} if decoding.num_beams > 1 else {}),
            max_new_tokens=decoding.max_new_tokens,
            use_cache=decoding.use_cache,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
            suppress_tokens=[tokens.image],
            **prefixed,
        )
    return [
        text.strip()
        for text in tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    ]


def _ids(value: int | list[int] | None) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)
