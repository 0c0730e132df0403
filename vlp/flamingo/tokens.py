"""The two tokens Flamingo adds to a language model's vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

IMAGE = "<image>"  # stands where an image was; the anchor of the media mask
END_OF_CHUNK = "<|endofchunk|>"  # closes the text that belongs to an image (Flamingo's <EOC>)
PAD = "<PAD>"  # added only for tokenizers without a pad token


@dataclass(frozen=True)
class FlamingoTokens:
    """Ids of the added tokens in one tokenizer."""

    image: int
    end_of_chunk: int


def literal_text(text: str) -> str:
    """``text`` (a caption, a question) with any ``<image>`` or ``<|endofchunk|>`` written in
    it broken up by a space after its ``<``, so the tokenizer reads it as characters.

    Written as is, it would become the added token: an extra image tag shifts every
    later image onto the wrong text, and a stray end of chunk masks text out of the loss.
    """
    for token in (IMAGE, END_OF_CHUNK):
        text = text.replace(token, f"{token[0]} {token[1:]}")
    return text


def literal_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """:func:`literal_text` of every value, for the ``{field}`` slots of a template."""
    return {name: literal_text(value) for name, value in fields.items()}


def add_flamingo_tokens(tokenizer: PreTrainedTokenizerBase) -> FlamingoTokens:
    """Add ``<image>`` and ``<|endofchunk|>`` (and a pad token if missing) to ``tokenizer``.

    A distinct pad token matters: padding is masked out of the loss, and a pad equal
    to EOS would mask EOS too. Calling this twice adds nothing new.
    """
    tokenizer.add_tokens([END_OF_CHUNK, IMAGE], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    return FlamingoTokens(
        image=tokenizer.convert_tokens_to_ids(IMAGE),
        end_of_chunk=tokenizer.convert_tokens_to_ids(END_OF_CHUNK),
    )
