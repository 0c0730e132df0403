"""CoOp (Zhou et al., IJCV 2022): prompt tuning of a frozen contrastive model.

The hand prompt "a photo of a {class}." becomes "[V]_1 … [V]_M {class}." and only the
context vectors [V] learn (``shared/specs/data2vec_ptuning.md`` §B.4). With f the
image embedding and g(t_c) the text embedding of class c's prompt, both of the
model's contrastive objective (its towers and projections, frozen):

    p(y = c | x) = exp(⟨f(x), g(t_c)⟩ / τ) / Σ_c' exp(⟨f(x), g(t_c')⟩ / τ)
    L_coop = −(1/N) Σ_x log p(y_x | x)          over the N labelled images

Zero-shot evaluation then scores images against the learned prompts
(``zeroshot/acc``) and still reports the hand templates (``zeroshot/acc_hand``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from vlp.datamodules.records import NO_LABEL
from vlp.distributed import global_mean
from vlp.encoders import Encoders
from vlp.encoders.text import TextEncoder
from vlp.encoding import Encoding
from vlp.objectives.base import Objective
from vlp.prompting.coop import ClassPosition, CoOpContext, coop_template
from vlp.step import Step


def coop_logits(image: Tensor, classes: Tensor, temperature: Tensor) -> Tensor:
    """⟨f(x), g(t_c)⟩ / τ for unit image [B, E] and class [C, E] embeddings."""
    return image @ classes.T / temperature


class CoOp(Objective):
    """Learned prompt context for zero-shot classification with the contrastive model.

    The model needs a contrastive objective (ITC) for f, g and τ, and labelled images;
    everything but the context is frozen (``prompt_only``).

    Args:
        class_names: the classes in label order, as the data labels them.
        weight: weight of ``coop_loss`` in the total.
        num_context: M, the number of context vectors (CoOp: 16).
        class_specific: one context per class (CSC) instead of one shared context.
        init_text: start the context at this phrase's token embeddings (CoOp: "a photo
            of a"); M is then its token count. Otherwise N(0, ``init_std``²).
        class_position: where the class name sits relative to the context.
        init_std: std of a random initial context.
    """

    name = "coop"
    needs: ClassVar[frozenset[str]] = frozenset({"images", "labels"})
    prompt_only: ClassVar[bool] = True

    def __init__(
        self,
        class_names: list[str],
        weight: float = 1.0,
        num_context: int = 16,
        class_specific: bool = False,
        init_text: str | None = None,
        class_position: ClassPosition = "end",
        init_std: float = 0.02,
    ) -> None:
        super().__init__(weight)
        if not class_names:
            raise ValueError("CoOp needs the class names")
        self.class_names = list(class_names)
        self.context_options = {
            "num_context": num_context,
            "class_specific": class_specific,
            "init_text": init_text,
            "class_position": class_position,
            "init_std": init_std,
        }

    def bind(self, encoders: Encoders) -> None:
        self.prompt = CoOpContext(encoders.text, self.class_names, **self.context_options)

    def class_embeddings(
        self, text_encoder: TextEncoder, embed_text: Callable[[Encoding], Tensor]
    ) -> Tensor:
        """g(t_c) of every class's learned prompt, [C, E] unit rows."""
        return self.prompt.class_embeddings(text_encoder, embed_text)

    def prompt_spec(self, prefix: str) -> dict[str, Any]:
        """How to use the learned prompts without vlp (``vlp export`` writes it): each ``[P]``
        of the template takes the next context row at the text tower's input embeddings."""
        options = self.context_options
        template = coop_template(self.prompt.context.shape[-2], options["class_position"])
        return {
            "context": f"{prefix}.prompt.context",
            "class_specific": options["class_specific"],
            "template": template.text,
            "class_names": self.class_names,
        }

    def forward(self, step: Step) -> dict[str, Tensor]:
        contrastive = step.embedder
        labels = step.field("labels")
        if not bool((labels != NO_LABEL).any()):
            raise ValueError("CoOp trains on labelled images; this batch has none")
        image = contrastive.embed_image(step.image())  # f(x)
        classes = self.class_embeddings(step.encoders.text, contrastive.embed_text)  # g(t_c)
        logits = coop_logits(image, classes, contrastive.temperature)
        known = labels != NO_LABEL
        accuracy = (logits[known].argmax(-1) == labels[known]).float().mean()
        total = F.cross_entropy(logits, labels, ignore_index=NO_LABEL, reduction="sum")
        loss = global_mean(total, known.sum())  # over the global batch's labelled images
        return {"coop_loss": loss, "acc": accuracy}
