"""Flamingo: a frozen causal LM learns to read images (Alayrac et al. 2022, eq. 1).

    L = E_(x,y) [ −Σ_ℓ log p(y_ℓ | y_<ℓ, x_≤ℓ) ]

the next-token NLL of the text y given the media x that precede each token
(``shared/specs/flamingo.md`` §4). The media are the model's *shared* vision encoder's
patch tokens (``step.media()``), so Flamingo trains in one step beside ITC, TCL or
data2vec on the same tower; ``model.freeze: [encoders.vision]`` keeps the tower fixed
as the paper does. A Perceiver Resampler turns each medium into a few latents, and
gated cross-attention blocks before the LM's decoder layers let the text read them
(``vlp.flamingo``). Labels are made on the data side (``LMTokenize``), where it is known
whether a row is a caption or an interleaved document.

What trains: the resampler and the cross-attention blocks always; the rows of the
added ``<image>``/``<|endofchunk|>`` tokens unless ``train_added_tokens`` is off; the
LM's own weights only with ``freeze_lm: false``, which is the default for an LM built
at random from ``lm_config`` (frozen, it would be noise the new blocks cannot read). A
frozen LM runs in eval mode (no dropout): its weights are a fixed function the new
blocks learn to condition, and dropout in it would only add noise to their gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
)

from vlp.datamodules.lm_text import LMTokenize
from vlp.encoders import Encoders
from vlp.evaluation.fewshot import FewShotConfig
from vlp.flamingo import FlamingoLM, PerceiverResampler, lm_loss, predicting_positions
from vlp.flamingo.generation import Decoding, generate
from vlp.objectives.base import Objective
from vlp.paths import resolve_model_path
from vlp.step import Step


@dataclass(frozen=True)
class ResamplerConfig:
    """Perceiver Resampler sizes (paper: 6 layers, 64 latents; OpenFlamingo: 8 heads × 64)."""

    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    num_latents: int = 64
    max_frames: int = 8  # most frames per clip


@dataclass(frozen=True)
class CrossAttentionConfig:
    """Gated cross-attention blocks: one before decoder layer i when (i + 1) % every == 0."""

    every: int = 1  # OpenFlamingo: 1 (MPT-1B), 2 (RedPajama-3B), 4 (MPT-7B)
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    only_attend_immediate_media: bool = True  # False: text attends every image before it


class Flamingo(Objective):
    """Language modelling of captions, documents and clip captions, conditioned on their media.

    Args:
        weight: weight of ``lm_loss`` in the total.
        lm: the causal LM: hub name, local folder or ``package:<module>/<path>``.
        lm_config: build a randomly initialised LM from this config instead (``model_type``
            plus sizes; the vocabulary comes from the tokenizer); for tiny runs.
        tokenizer: where the LM's tokenizer lives; defaults to ``lm``.
        max_length: captions' LM sequences are truncated to this many tokens
            (OpenFlamingo: 32).
        document_max_length: the same for interleaved documents (OpenFlamingo: 256).
        resampler, cross_attention: sizes of the new modules.
        layers_path: dotted path to the LM's decoder layers, for families that
            ``vlp.flamingo.lm.LAYER_PATHS`` does not know.
        freeze_lm: keep the LM's weights fixed (Flamingo); false fine-tunes them too.
            Unset: fixed for a pretrained ``lm``, trained for one built from ``lm_config``.
        train_added_tokens: learn the embedding and output rows of the added tokens.
        trust_remote_code: run model code from the LM's folder; off by default.
        fewshot: few-shot captioning and VQA at validation and test (``vlp.evaluation.fewshot``).
    """

    name = "flamingo"
    needs: ClassVar[frozenset[str]] = frozenset({"images", "lm_text"})

    def __init__(
        self,
        weight: float = 1.0,
        lm: str = "facebook/opt-125m",
        lm_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        max_length: int = 32,
        document_max_length: int = 256,
        resampler: ResamplerConfig = ResamplerConfig(),
        cross_attention: CrossAttentionConfig = CrossAttentionConfig(),
        layers_path: str | None = None,
        freeze_lm: bool | None = None,
        train_added_tokens: bool = True,
        trust_remote_code: bool = False,
        fewshot: FewShotConfig = FewShotConfig(),
    ) -> None:
        super().__init__(weight)
        self.lm_name = lm
        self.lm_config = lm_config
        self.tokenizer_name = tokenizer or lm
        self.max_length = max_length
        self.document_max_length = document_max_length
        self.resampler_config = resampler
        self.cross_attention = cross_attention
        self.layers_path = layers_path
        self.freeze_lm = lm_config is None if freeze_lm is None else freeze_lm
        self.train_added_tokens = train_added_tokens
        self.trust_remote_code = trust_remote_code
        self.fewshot = fewshot

    def bind(self, encoders: Encoders) -> None:
        """The resampler and cross-attention read the vision encoder's width."""
        width = encoders.vision.width
        r, x = self.resampler_config, self.cross_attention
        self.resampler = PerceiverResampler(
            width, r.depth, r.heads, r.dim_head, r.ff_mult, r.num_latents, r.max_frames
        )
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_model_path(self.tokenizer_name), trust_remote_code=self.trust_remote_code
        )
        self.lm = FlamingoLM(
            self._language_model(tokenizer),
            tokenizer,
            media_dim=width,
            cross_attn_every=x.every,
            layers_path=self.layers_path,
            heads=x.heads,
            dim_head=x.dim_head,
            ff_mult=x.ff_mult,
            freeze_lm=self.freeze_lm,
            train_added_tokens=self.train_added_tokens,
            only_attend_immediate_media=x.only_attend_immediate_media,
        )
        self.lm_tokenize = LMTokenize(self.lm.tokenizer, self.max_length, self.document_max_length)
        self.train(self.training)

    def _language_model(self, tokenizer: Any) -> PreTrainedModel:
        if self.lm_config is None:
            lm = AutoModelForCausalLM.from_pretrained(
                resolve_model_path(self.lm_name), trust_remote_code=self.trust_remote_code
            )
            return lm.train()  # from_pretrained returns eval mode; train() below decides
        special = {
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id or tokenizer.cls_token_id,
            "eos_token_id": tokenizer.eos_token_id or tokenizer.sep_token_id,
        }
        sizes = {"vocab_size": len(tokenizer), **special, **self.lm_config}
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**sizes))

    def checkpoint_activations(self) -> None:
        self.resampler.checkpoint_activations()
        self.lm.checkpoint_activations()

    def train(self, mode: bool = True) -> Flamingo:
        super().train(mode)
        if self.freeze_lm and hasattr(self, "lm"):
            self.lm.lm.eval()
            for block in self.lm.cross_attn_blocks():
                block.train(mode)
        return self

    def forward(self, step: Step) -> dict[str, Tensor]:
        visual = self.resampler(step.media())  # [B, T, num_latents, D]
        ids, mask, labels = (step.field(name) for name in ("lm_ids", "lm_mask", "lm_labels"))
        return {"lm_loss": self.lm_nll(ids, visual, mask, labels)}

    def lm_nll(
        self,
        ids: Tensor,
        visual: Tensor,
        mask: Tensor,
        labels: Tensor,
        prefix: DynamicCache | None = None,
    ) -> Tensor:
        """Eq. 1's mean NLL of ``labels`` given ``visual``; the LM projects onto its vocabulary
        only the positions whose next token is a target. A learned ``prefix`` (P-tuning v2)
        comes as the LM's cache, with ``mask`` covering it."""
        out = self.lm(ids, visual, mask, predicting_positions(labels), prefix, use_cache=False)
        return lm_loss(out.logits.float(), labels)

    def resample_images(self, image_tokens: Tensor) -> Tensor:
        """Each image's patch tokens [M, N, D] on its own → its visual tokens [M, n, D].

        The resampler treats every medium alike wherever it sits (as OpenFlamingo's does),
        so an image's visual tokens do not depend on its place in a prompt and are
        computed once for every prompt that shows it.
        """
        return self.resample_clips(image_tokens[:, None])

    def resample_clips(self, frame_tokens: Tensor) -> Tensor:
        """Each clip's frames' patch tokens [M, F, N, D] on their own → its visual tokens
        [M, n, D] (the frames' time embeddings added, as in training)."""
        return self.resampler(frame_tokens[:, None])[:, 0]

    def generate(
        self, visual: Tensor, prompts: Sequence[str], decoding: Decoding = Decoding()
    ) -> list[str]:
        """The continuation of each prompt given its images' visual tokens [B, T, n, D]."""
        return generate(self.lm, visual, prompts, decoding)
