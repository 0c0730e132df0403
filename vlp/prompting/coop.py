"""CoOp (Zhou et al., IJCV 2022): learned context words for zero-shot classification.

The hand prompt "a photo of a {class}." becomes "[V]_1 … [V]_M {class}." whose M context
vectors are learned while the contrastive model stays frozen; each class's prompt goes
through the text encoder, and the class embeddings g(t_c) score images exactly as hand
prompts do: p(y = c | x) = softmax_c(⟨f(x), g(t_c)⟩ / τ). The context is shared by all
classes (unified) or one per class (CSC); the class name sits at the end, the middle or
the front (``shared/specs/data2vec_ptuning.md`` §B.4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from vlp.encoders.text import TextEncoder
from vlp.encoding import Encoding
from vlp.evaluation.zeroshot import class_embeddings
from vlp.prompting.splice import prompts_spliced
from vlp.prompting.template import SLOT, PromptTemplate

ClassPosition = Literal["end", "middle", "front"]


def coop_template(num_context: int, class_position: ClassPosition = "end") -> PromptTemplate:
    """ "[V]…[V] {class}." with the class name at ``class_position``, in special tokens."""
    before = {"end": num_context, "middle": num_context // 2, "front": 0}[class_position]
    text = f"{SLOT * before} {{class}} {SLOT * (num_context - before)}".strip() + "."
    return PromptTemplate(text, add_special_tokens=True)


class CoOpContext(nn.Module):
    """The learned context of every class prompt, and the prompts' text encodings.

    The text encoder is passed in, not owned: it belongs to the contrastive model, and
    the context is all this module trains or saves.

    Args:
        text_encoder: the contrastive model's text tower (for tokenizer, width, init).
        class_names: one prompt per class, in label order.
        num_context: M, the number of context vectors (CoOp: 16).
        class_specific: one context per class (CSC) instead of one shared context.
        init_text: start the context at this phrase's token embeddings (e.g. "a photo of
            a"); M is then its token count. Otherwise N(0, ``init_std``²), as in CoOp.
        class_position: where the class name goes relative to the context.
    """

    def __init__(
        self,
        text_encoder: TextEncoder,
        class_names: Sequence[str],
        num_context: int = 16,
        class_specific: bool = False,
        init_text: str | None = None,
        class_position: ClassPosition = "end",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if init_text is not None:
            ids = text_encoder.tokenizer(init_text, add_special_tokens=False)["input_ids"]
            weight = text_encoder.model.get_input_embeddings().weight
            context = weight.detach()[torch.tensor(ids)].clone()
        else:
            context = torch.randn(num_context, text_encoder.width) * init_std
        if class_specific:
            context = context.expand(len(class_names), *context.shape).clone()
        self.context = nn.Parameter(context)  # [M, D] or [C, M, D]
        template = coop_template(context.shape[-2], class_position)
        prompts = template.batch(text_encoder.tokenizer, [{"class": c} for c in class_names])
        self.register_buffer("text_ids", prompts.input_ids, persistent=False)
        self.register_buffer("text_mask", prompts.attention_mask, persistent=False)
        self.register_buffer("slot_mask", prompts.slot_mask, persistent=False)

    def forward(self, text_encoder: TextEncoder) -> Encoding:
        """The text encoding of every class prompt, one row per class."""
        embedding = text_encoder.model.get_input_embeddings()
        with prompts_spliced(embedding, self.slot_mask, self.context):
            return text_encoder(self.text_ids, self.text_mask)

    def class_embeddings(
        self, text_encoder: TextEncoder, embed_text: Callable[[Encoding], Tensor]
    ) -> Tensor:
        """Unit class embeddings [C, E] for ``zeroshot_accuracy``; ``embed_text`` maps text
        encodings into the shared space (e.g. ``Contrastive.embed_text``)."""
        return class_embeddings(embed_text(self(text_encoder)), len(self.text_ids))
