"""A Hugging Face causal LM made into Flamingo's language side.

The LM's decoder layers are wrapped in place, so its own ``forward``, KV cache and
``generate`` keep working; a forward pre-hook on the LM reads the token ids of every
call (each ``generate`` step included) and computes the media mask the blocks use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlp.activation_checkpointing import run_layer
from vlp.flamingo.added_tokens import AddedTokenEmbedding, AddedTokenHead
from vlp.flamingo.cross_attention import GatedCrossAttentionBlock
from vlp.flamingo.media_mask import media_attention_mask, media_index
from vlp.flamingo.tokens import FlamingoTokens, add_flamingo_tokens

# Where the decoder layer list lives: Llama/Mistral/Qwen, OPT, GPT-2/GPT-J/GPT-Neo,
# GPT-NeoX/Pythia, MPT. Other families pass ``layers_path``.
LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers",
               "transformer.blocks")  # fmt: skip


@dataclass
class MediaConditioning:
    """What the cross-attention blocks see during a forward; also the LM's pre-hook."""

    image_token_id: int
    only_immediate: bool = True  # a token attends only the last image before it
    media: Tensor | None = None  # [B, T, n, D] resampled visual tokens
    mask: Tensor | None = None  # [B, L, T·n] for the tokens of the current forward
    images_seen: Tensor | None = None  # [B] <image> tokens up to the current chunk's end
    prefix_length: int = 0  # cached positions that are a learned prefix, not text (P-tuning v2)

    def __call__(self, lm: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.media is None:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError("Flamingo places images by token ids: pass input_ids, not embeddings")
        past = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers ≥5.x / older
        continues = past is not None and past.get_seq_length() > self.prefix_length
        if continues and self.images_seen is None:
            raise ValueError(
                "decode a cached continuation in the conditioned_on block of its prompt"
            )
        index = media_index(input_ids, self.image_token_id, self.images_seen if continues else None)
        self.images_seen = index[:, -1]
        self.mask = media_attention_mask(index, *self.media.shape[1:3], self.only_immediate)


class FlamingoLayer(nn.Module):
    """A decoder layer preceded by its gated cross-attention block, if it has one."""

    def __init__(
        self,
        decoder_layer: nn.Module,
        xattn: GatedCrossAttentionBlock | None,
        conditioning: MediaConditioning,
    ) -> None:
        super().__init__()
        self.decoder_layer = decoder_layer
        self.xattn = xattn
        self.conditioning = conditioning
        self.recompute = False  # activation checkpointing of the block and the layer

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        # the media go in as arguments: a recompute in backward runs after the forward
        # has cleared the conditioning
        media, mask = self.conditioning.media, self.conditioning.mask
        return run_layer(self.recompute, self._run, hidden_states, media, mask, *args, **kwargs)

    def _run(
        self, hidden_states: Tensor, media: Tensor | None, mask: Tensor | None, *args, **kwargs
    ) -> Any:
        if self.xattn is not None:
            hidden_states = self.xattn(hidden_states, media, mask)
        return self.decoder_layer(hidden_states, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # HF models read per-layer attributes (e.g. ``attention_type``) off the list items.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "decoder_layer":
                raise
            return getattr(self.decoder_layer, name)


class FlamingoLM(nn.Module):
    """A causal LM with a gated cross-attention block before every n-th decoder layer.

    Args:
        lm: a Hugging Face causal LM (e.g. from ``AutoModelForCausalLM``); changed in place.
        tokenizer: its tokenizer; ``<image>`` and ``<|endofchunk|>`` are added to it.
        media_dim: width of the resampled visual tokens.
        cross_attn_every: a block before layer i when (i + 1) % n == 0 (OpenFlamingo: 1–4).
        layers_path: dotted path to the decoder layer list, for families not in
            ``LAYER_PATHS``.
        heads, dim_head, ff_mult: sizes of each block.
        freeze_lm: keep the LM's own weights fixed, as Flamingo does; False fine-tunes them.
        train_added_tokens: learn the added tokens' input and output rows.
        only_attend_immediate_media: a text token attends the last image before it only
            (Flamingo); False: every image before it (an OpenFlamingo option).
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        media_dim: int,
        cross_attn_every: int = 1,
        layers_path: str | None = None,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        freeze_lm: bool = True,
        train_added_tokens: bool = True,
        only_attend_immediate_media: bool = True,
    ) -> None:
        super().__init__()
        lm.requires_grad_(not freeze_lm)
        self.lm = lm
        self.tokenizer = tokenizer
        self.tokens: FlamingoTokens = self._add_tokens(train_added_tokens)
        self.conditioning = MediaConditioning(self.tokens.image, only_attend_immediate_media)
        layers = decoder_layers(lm, layers_path)
        width = lm.config.get_text_config().hidden_size
        for i, layer in enumerate(layers):
            xattn = None
            if (i + 1) % cross_attn_every == 0:
                xattn = GatedCrossAttentionBlock(width, media_dim, heads, dim_head, ff_mult)
            layers[i] = FlamingoLayer(layer, xattn, self.conditioning)
        lm.register_forward_pre_hook(self.conditioning, with_kwargs=True)

    def forward(
        self,
        input_ids: Tensor,
        media: Tensor | None = None,
        attention_mask: Tensor | None = None,
        predict_at: Tensor | None = None,
        prefix: DynamicCache | None = None,
        **lm_kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits for ``input_ids`` [B, L] given resampled ``media`` [B, T, n, D]
        (image k of a row is the one its k-th ``<image>`` token stands for): [B, L, V], or
        [M, V] at the True positions of ``predict_at`` [B, L] only (the vocabulary
        projection and its softmax dominate a small LM's step). ``prefix``: a learned prefix's
        cache (:class:`vlp.prompting.DeepPrompts`), with ``attention_mask`` covering it; it
        lives in the cache, so the LM uses one whatever ``use_cache`` says."""
        head = self.lm.get_output_embeddings()
        prefix_length = 0
        if prefix is not None:
            prefix_length = prefix.get_seq_length()
            lm_kwargs |= {"cache": prefix, "use_cache": True}
        with self.conditioned_on(media, prefix_length), head.predicting_at(predict_at):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, **lm_kwargs)

    @contextmanager
    def conditioned_on(self, media: Tensor | None, prefix_length: int = 0) -> Iterator[None]:
        """Every LM call inside (e.g. all steps of ``self.lm.generate``) sees ``media``;
        the first ``prefix_length`` cached positions are a learned prefix, not past text."""
        self.conditioning.media = media
        self.conditioning.prefix_length = prefix_length
        try:
            yield
        finally:
            self.conditioning.media = self.conditioning.mask = None
            self.conditioning.images_seen = None
            self.conditioning.prefix_length = 0

    def checkpoint_activations(self) -> None:
        """Recompute each decoder layer's activations (with its block's) in the backward
        pass. Training must then not write a KV cache: a recompute would write it twice."""
        for module in self.lm.modules():
            if isinstance(module, FlamingoLayer):
                module.recompute = True

    def cross_attn_blocks(self) -> Iterator[GatedCrossAttentionBlock]:
        """The inserted blocks (their parameter names also contain ``.xattn.``, e.g. for
        weight decay on the blocks only, as OpenFlamingo does)."""
        for module in self.lm.modules():
            if isinstance(module, FlamingoLayer) and module.xattn is not None:
                yield module.xattn

    def _add_tokens(self, trainable: bool) -> FlamingoTokens:
        """Add the tokens to the tokenizer and their rows beside the LM's frozen matrices."""
        embedding, head = self.lm.get_input_embeddings(), self.lm.get_output_embeddings()
        known = len(self.tokenizer)
        if known > embedding.num_embeddings:
            raise ValueError(f"tokenizer has {known} tokens, LM only {embedding.num_embeddings}")
        tokens = add_flamingo_tokens(self.tokenizer)
        added = list(range(known, len(self.tokenizer)))
        input_rows = _mean_rows(embedding.weight, len(added), trainable)
        tied = head.weight is embedding.weight
        output_rows = input_rows if tied else _mean_rows(head.weight, len(added), trainable)
        vocab_size = max(embedding.num_embeddings, len(self.tokenizer))
        self.lm.set_input_embeddings(AddedTokenEmbedding(embedding, added, input_rows))
        self.lm.set_output_embeddings(AddedTokenHead(head, added, output_rows, vocab_size))
        self.lm.config.get_text_config().vocab_size = vocab_size
        return tokens


def decoder_layers(lm: nn.Module, layers_path: str | None = None) -> nn.ModuleList:
    """The LM's list of decoder layers, at ``layers_path`` or the first known path."""
    for path in (layers_path,) if layers_path else LAYER_PATHS:
        module: Any = lm
        try:
            for name in path.split("."):
                module = getattr(module, name)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return module
    tried = layers_path or ", ".join(LAYER_PATHS)
    raise ValueError(f"{type(lm).__name__}: no decoder layer list at {tried}; pass layers_path")


def _mean_rows(matrix: Tensor, count: int, trainable: bool) -> nn.Parameter:
    """New rows starting at the mean of the existing ones: in-distribution from step 0."""
    rows = matrix.detach().mean(dim=0).expand(count, -1).clone()
    return nn.Parameter(rows, requires_grad=trainable)
