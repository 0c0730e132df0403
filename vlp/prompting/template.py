"""P-tuning templates: pseudo tokens [P] placed between real anchor tokens.

A template such as ``"[P][P] <image> Question: {q} [P] Answer:"`` is tokenised piece by
piece: each ``[P]`` becomes one slot for a prompt vector, text between slots (with
``{field}`` filled in) stays real tokens, and an optional target follows the template.
Unlike PEFT's prefix-only virtual tokens, slots may sit anywhere (P-tuning v1, §3.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from vlp.prompting.splice import splice

SLOT = "[P]"
IGNORE_INDEX = -100  # labels the LM loss skips


@dataclass
class PromptedBatch:
    """A padded batch of filled templates; every tensor is [B, L] and position-aligned."""

    input_ids: Tensor  # slots hold ``slot_id``: a valid id whose embedding is replaced
    attention_mask: Tensor
    slot_mask: Tensor  # bool, the m slots of each row in template order
    labels: Tensor  # target ids, IGNORE_INDEX on template, slots and padding

    def inputs_embeds(self, embedding: nn.Module, prompts: Tensor) -> Tensor:
        """The LM's ``inputs_embeds``: token embeddings with ``prompts`` [m, D] or [B, m, D]
        at the slots."""
        return splice(embedding(self.input_ids), self.slot_mask, prompts)

    def to(self, device: torch.device | str) -> PromptedBatch:
        return PromptedBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class PromptTemplate:
    """A template with ``[P]`` slots and ``{field}`` placeholders.

    Args:
        text: e.g. ``"[P][P] <image> [P] caption:"``; text between slots is tokenised
            as written, so spaces matter to byte-level BPE tokenisers.
        add_special_tokens: wrap each row in the tokenizer's special tokens ([CLS] … [SEP]
            for BERT-style encoders, BOS for Llama-style LMs).
    """

    text: str
    add_special_tokens: bool = False

    @property
    def num_slots(self) -> int:
        return self.text.count(SLOT)

    def tokens(
        self,
        tokenizer: PreTrainedTokenizerBase,
        values: Mapping[str, str] | None = None,
        target: str | None = None,
        open_end: bool = False,
    ) -> tuple[list[int], list[bool], list[int]]:
        """Ids, slot flags and labels of one filled template followed by ``target``.

        With special tokens, those that close a text (a [SEP]) follow the target and are
        its last labels, as a causal LM trained on such texts predicts them; ``open_end``
        leaves them out, for a prompt that an LM is to continue.
        """
        ids: list[int] = []
        slots: list[bool] = []
        for i, piece in enumerate(self.text.split(SLOT)):
            if i > 0:
                ids.append(slot_id(tokenizer))
                slots.append(True)
            piece_ids = _ids(tokenizer, piece.format_map(values or {}))
            ids += piece_ids
            slots += [False] * len(piece_ids)
        labels = [IGNORE_INDEX] * len(ids)
        if target is not None:
            target_ids = _ids(tokenizer, target)
            ids += target_ids
            slots += [False] * len(target_ids)
            labels += target_ids
        if self.add_special_tokens:
            prefix, suffix = special_tokens(tokenizer)
            suffix = [] if open_end else suffix
            ids = prefix + ids + suffix
            slots = [False] * len(prefix) + slots + [False] * len(suffix)
            end_labels = suffix if target is not None else [IGNORE_INDEX] * len(suffix)
            labels = [IGNORE_INDEX] * len(prefix) + labels + end_labels
        return ids, slots, labels

    def batch(
        self,
        tokenizer: PreTrainedTokenizerBase,
        values: Sequence[Mapping[str, str]],
        targets: Sequence[str] | None = None,
        open_end: bool = False,
        padding_side: str | None = None,
    ) -> PromptedBatch:
        """One row per entry of ``values`` (and ``targets``), padded on ``padding_side``
        (default: the tokenizer's; generation pads on the left)."""
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token")
        if targets is not None and len(targets) != len(values):
            raise ValueError(f"{len(values)} rows of values but {len(targets)} targets")
        rows = [
            self.tokens(tokenizer, row, None if targets is None else targets[i], open_end)
            for i, row in enumerate(values)
        ]
        length = max(len(ids) for ids, _, _ in rows)
        left = (padding_side or tokenizer.padding_side) == "left"

        def padded(items: list, fill: int | bool) -> list:
            padding = [fill] * (length - len(items))
            return padding + items if left else items + padding

        return PromptedBatch(
            input_ids=torch.tensor([padded(ids, tokenizer.pad_token_id) for ids, _, _ in rows]),
            attention_mask=torch.tensor([padded([1] * len(ids), 0) for ids, _, _ in rows]),
            slot_mask=torch.tensor([padded(slots, False) for _, slots, _ in rows]),
            labels=torch.tensor([padded(labels, IGNORE_INDEX) for _, _, labels in rows]),
        )


def slot_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id a slot holds: the unknown token's, never the pad id, since RoBERTa-family
    encoders number positions by ``input_ids != pad`` and would give a pad slot the
    padding position, shifting every later token."""
    candidates = (tokenizer.unk_token_id, tokenizer.mask_token_id, 0, 1)
    return next(i for i in candidates if i is not None and i != tokenizer.pad_token_id)


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (e.g. [CLS] and [SEP])."""
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    ids, special = probe["input_ids"], probe["special_tokens_mask"]
    lead = special.index(0)
    trail = special[::-1].index(0)
    return ids[:lead], ids[len(ids) - trail :]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
