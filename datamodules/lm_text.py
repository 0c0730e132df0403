"""Text and media as one language-model sequence, with Flamingo's training labels.

A document is laid out in reading order as text pieces and ``None`` where a medium
(an image, or a clip of frames) stands. Following OpenFlamingo's data pipeline
(``shared/specs/flamingo.md`` §4.1), each medium becomes ``<image>``, every medium but
the first is preceded by ``<|endofchunk|>`` (closing the text about the previous one),
and the sequence ends with ``<|endofchunk|>`` and the tokenizer's EOS:

    pair:      <image>a red circle<|endofchunk|><eos>
    document:  intro<image>first, a red circle.<|endofchunk|><image>then, ...<|endofchunk|><eos>
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from vlp.flamingo.loss import IGNORE, flamingo_labels
from vlp.flamingo.tokens import END_OF_CHUNK, IMAGE, literal_text
from vlp.prompting.template import special_tokens

Layout = Sequence[str | None]  # text pieces, and None where a medium stands


def format_document(layout: Layout, eos: str = "") -> str:
    """The LM text of one document; consecutive text pieces are joined by a space, and
    tags written in them stay text (:func:`~vlp.flamingo.tokens.literal_text`)."""
    parts: list[str] = []
    media_seen = 0
    previous_was_text = False
    for piece in layout:
        if piece is None:
            parts.append(IMAGE if media_seen == 0 else END_OF_CHUNK + IMAGE)
            media_seen += 1
            previous_was_text = False
        elif piece.strip():
            parts.append((" " if previous_was_text else "") + literal_text(piece.strip()))
            previous_was_text = True
    return "".join(parts) + END_OF_CHUNK + eos


@dataclass(frozen=True)
class LMTokenize:
    """Documents → ``lm_ids``/``lm_mask``/``lm_labels`` [B, L] for the Flamingo LM.

    Small and picklable, so data workers can run it. The tokenizer must already know
    ``<image>`` and ``<|endofchunk|>`` (the Flamingo objective adds them). Its own
    special tokens are kept (a BOS for Llama, ``[CLS] … [SEP]`` for BERT-style
    vocabularies); its EOS, if it has one, ends every document. Sequences are padded
    on the right and truncated to ``max_length`` tokens, interleaved documents to
    ``document_max_length`` (OpenFlamingo: 32 and 256); a cut row keeps the closing
    special tokens the tokenizer appends, but they are not targets there.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    document_max_length: int

    def __call__(self, layouts: Sequence[Layout], interleaved: bool) -> dict[str, Tensor]:
        """``interleaved``: documents (MMC4-style label masking) rather than captioned media."""
        texts = [format_document(layout, self.tokenizer.eos_token or "") for layout in layouts]
        max_length = self.document_max_length if interleaved else self.max_length
        tokens = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=max_length,
            padding_side="right",
            return_tensors="pt",
        )
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        image_id, end_of_chunk_id = self.tokenizer.convert_tokens_to_ids([IMAGE, END_OF_CHUNK])
        labels = flamingo_labels(ids, mask, image_id, end_of_chunk_id, interleaved)
        labels = self._no_end_after_a_cut(texts, labels, mask, max_length)
        return {"lm_ids": ids, "lm_mask": mask, "lm_labels": labels}

    def _no_end_after_a_cut(
        self, texts: list[str], labels: Tensor, mask: Tensor, max_length: int
    ) -> Tensor:
        """``labels`` without the tokens the tokenizer appends after a text (BERT's [SEP],
        the EOS of such LMs) on rows cut at ``max_length``: the text goes on there, so
        ending it is no target. An EOS written into the text is cut off with it instead."""
        _, appended = special_tokens(self.tokenizer)
        ends = mask.sum(dim=1, keepdim=True)
        full = (ends[:, 0] == max_length).nonzero()[:, 0].tolist()  # only these can be cut
        if not appended or not full:
            return labels
        untruncated = self.tokenizer([texts[i] for i in full], verbose=False)["input_ids"]
        cut = torch.zeros(len(texts), dtype=torch.bool)
        cut[full] = torch.tensor([len(ids) > max_length for ids in untruncated])
        positions = torch.arange(labels.shape[1])
        is_appended = (positions >= ends - len(appended)) & (positions < ends)
        return labels.masked_fill(is_appended & cut[:, None], IGNORE)

    def captions(self, captions: Sequence[str]) -> dict[str, Tensor]:
        """Each caption after its one medium: ``<image>caption<|endofchunk|><eos>``."""
        return self([(None, caption) for caption in captions], interleaved=False)
