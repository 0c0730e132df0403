"""P-tuning of a frozen Flamingo (Liu et al. 2021, "GPT Understands, Too", §3).

Each task's template interleaves pseudo tokens [P] with the image tag and anchor words;
the target follows it as in Flamingo's training text (``shared/specs/data2vec_ptuning.md``
§B.1):

    caption:  [P][P]<image>[P][P] {caption}<|endofchunk|>
    VQA:      [P]<image>[P]Question:{question}[P] Short answer: {answer}<|endofchunk|>

The [P] rows of the LM's input embeddings are overwritten by the task's prompt encoder
outputs h_1..h_m. Everything of the stage-1 Flamingo (LM, resampler, cross-attention,
vision tower) is frozen (``prompt_only``) and the loss is Flamingo's NLL (eq. 1) of the
target tokens y given the prompt h and the image x, one term per task:

    L_task = −Σ_ℓ log p(y_ℓ | y_<ℓ, h, x)        (mean over all target tokens)

Deep prompts (P-tuning v2, ``deep_prompt_length`` m > 0) add to each task m learned
keys and values in every attention layer (:class:`vlp.prompting.DeepPrompts`), which all
tokens attend to as if they were m tokens before the text; the template's [P] slots stay
(a template without [P] gives P-tuning v2 alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from vlp.distributed import global_mean
from vlp.encoders import Encoders
from vlp.flamingo import END_OF_CHUNK, IMAGE, literal_fields, literal_text
from vlp.flamingo.generation import Decoding, generate_from_ids
from vlp.objectives.flamingo import Flamingo
from vlp.prompting.deep_prompts import DeepPrompts
from vlp.prompting.prompt_encoder import PromptEncoder, Reparameterization
from vlp.prompting.splice import prompts_spliced
from vlp.prompting.template import PromptedBatch, PromptTemplate
from vlp.step import Step

Task = Literal["caption", "vqa"]


class FlamingoPromptTuning(Flamingo):
    """Learned continuous prompts for captioning and VQA with a frozen Flamingo.

    Start it from a stage-1 Flamingo run with ``model.init_from`` (same objective order);
    the prompt encoders are the only new weights. The Flamingo arguments (``lm``,
    ``lm_config``, ``tokenizer``, sizes, ``fewshot``) must match that run's.

    Args:
        weight: weight of the tasks' summed losses.
        tasks: which templates are trained (and evaluated with learned prompts).
        caption_template, vqa_template: the templates; one ``<image>`` each, the VQA
            one with ``{question}``; text between slots is tokenised as written.
        reparameterization: the prompt encoder's (``MLP``, ``LSTM`` or ``NONE``; PEFT's
            ``encoder_reparameterization_type``).
        encoder_hidden_size: the encoder's hidden width (default: the LM's width).
        encoder_num_layers, encoder_dropout: of the LSTM.
        deep_prompt_length: m, the learned prefix of every attention layer per task (P-tuning
            v2's ``pre_seq_len``); 0 leaves it out.
        deep_prompt_projection: produce the prefix with P-tuning v2's MLP.
        flamingo: the stage-1 :class:`Flamingo`'s arguments.
    """

    name = "flamingo_ptuning"
    # captions and questions come with every batch; the LM text is built here, per template
    needs: ClassVar[frozenset[str]] = frozenset({"images"})
    prompt_only: ClassVar[bool] = True

    def __init__(
        self,
        weight: float = 1.0,
        tasks: tuple[Task, ...] = ("caption", "vqa"),
        caption_template: str = "[P][P]<image>[P][P]",
        vqa_template: str = "[P]<image>[P]Question:{question}[P] Short answer:",
        reparameterization: Reparameterization = "MLP",
        encoder_hidden_size: int | None = None,
        encoder_num_layers: int = 2,
        encoder_dropout: float = 0.0,
        deep_prompt_length: int = 0,
        deep_prompt_projection: bool = False,
        **flamingo: Any,
    ) -> None:
        super().__init__(weight, **flamingo)
        if not tasks:
            raise ValueError("FlamingoPromptTuning needs at least one task")
        texts = {"caption": caption_template, "vqa": vqa_template}
        for task, text in texts.items():
            if text.count(IMAGE) != 1:
                raise ValueError(f"the {task} template needs one {IMAGE}: {text!r}")
        if "{question}" not in vqa_template:
            raise ValueError(f"the vqa template needs a {{question}} field: {vqa_template!r}")
        self.tasks = tuple(dict.fromkeys(tasks))
        self.templates = {task: PromptTemplate(texts[task], add_special_tokens=True)
                          for task in self.tasks}  # fmt: skip
        if deep_prompt_length < 0:
            raise ValueError(f"deep_prompt_length must be ≥ 0, got {deep_prompt_length}")
        self.deep_prompt_options = {
            "num_virtual_tokens": deep_prompt_length,
            "prefix_projection": deep_prompt_projection,
        }
        self.encoder_options = {
            "encoder_reparameterization_type": reparameterization,
            "encoder_hidden_size": encoder_hidden_size,
            "encoder_num_layers": encoder_num_layers,
            "encoder_dropout": encoder_dropout,
        }

    def bind(self, encoders: Encoders) -> None:
        super().bind(encoders)
        width = self.lm.lm.config.get_text_config().hidden_size
        self.prompts = nn.ModuleDict(
            {
                task: PromptEncoder(template.num_slots, width, **self.encoder_options)
                for task, template in self.templates.items()
            }
        )
        deep = self.deep_prompt_options["num_virtual_tokens"] > 0
        self.deep_prompts = nn.ModuleDict(
            {task: DeepPrompts.for_model(self.lm.lm, **self.deep_prompt_options)
             for task in self.templates if deep}
        )  # fmt: skip
        self.train(self.training)

    def checkpoint_activations(self) -> None:
        if self.deep_prompts:
            raise ValueError(
                "model.activation_checkpointing: deep prompts enter the LM as a KV cache, "
                "which recomputing a layer would write twice; use one or the other"
            )
        super().checkpoint_activations()

    def prompt_modules(self) -> tuple[nn.Module, ...]:
        return (self.prompts, self.deep_prompts)

    def train(self, mode: bool = True) -> FlamingoPromptTuning:
        """Only the prompts learn: the stage-1 model runs as at inference (no dropout)."""
        super().train(False)
        self.training = mode
        if hasattr(self, "prompts"):
            self.prompts.train(mode)
            self.deep_prompts.train(mode)
        return self

    def forward(self, step: Step) -> dict[str, Tensor]:
        visual = self.resample_images(step.image().tokens)[:, None]  # [B, 1, n, D]
        captions = step.field("captions")
        terms = {}
        if "caption" in self.tasks:
            rows = list(range(len(captions)))
            targets = [texts[0] for texts in captions]
            terms["caption_loss"] = self._loss("caption", visual, rows, [{}] * len(rows), targets)
        if "vqa" in self.tasks:
            asked = [(row, qa[int(torch.randint(len(qa), ()))])
                     for row, qa in enumerate(step.field("questions")) if qa]  # fmt: skip
            rows = [row for row, _ in asked]
            queries = [{"question": qa["question"]} for _, qa in asked]
            terms["vqa_loss"] = self._loss(
                "vqa", visual, rows, queries, [qa["answer"] for _, qa in asked]
            )
        return terms

    def _loss(
        self,
        task: Task,
        visual: Tensor,
        rows: list[int],
        values: list[dict[str, str]],
        targets: list[str],
    ) -> Tensor:
        """Mean NLL of the targets after their filled templates; 0 (with the graph of the
        task's prompts, deep ones included, and the same collective calls on every rank)
        when no row has this task."""
        if not rows:
            learned = [m for m in (self.prompts[task], self._deep(task)) if m is not None]
            return global_mean(sum(p.sum() for m in learned for p in m.parameters()) * 0, 0)
        batch = self.prompted_batch(task, values, targets).to(visual.device)
        mask, prefix = self._prefixed(task, batch.attention_mask)
        with self._spliced(task, batch.slot_mask):
            return self.lm_nll(batch.input_ids, visual[rows], mask, batch.labels, prefix)

    def prompted_batch(
        self, task: Task, values: Sequence[dict[str, str]], targets: Sequence[str]
    ) -> PromptedBatch:
        """Filled templates followed by ``target<|endofchunk|><eos>``, as Flamingo's captions
        end (``LMTokenize``); only the target and what closes it are labelled. Tags written
        in the values or targets stay text, as in ``LMTokenize``."""
        tokenizer = self.lm.tokenizer
        end = END_OF_CHUNK + (tokenizer.eos_token or "")
        texts = [f"{literal_text(target.strip())}{end}" for target in targets]
        rows = [literal_fields(row) for row in values]
        return self.templates[task].batch(tokenizer, rows, texts, padding_side="right")

    def prompted_logits(self, task: Task, batch: PromptedBatch, visual: Tensor) -> Tensor:
        """The LM's logits for ``batch`` with the task's prompt vectors at its slots."""
        mask, prefix = self._prefixed(task, batch.attention_mask)
        with self._spliced(task, batch.slot_mask):
            return self.lm(batch.input_ids, visual, mask, prefix=prefix, use_cache=False).logits

    def _prefixed(self, task: Task, mask: Tensor) -> tuple[Tensor, DynamicCache | None]:
        """The attention mask and the LM cache that put the task's deep prompts before the
        text; ``mask`` and no cache without deep prompts."""
        deep = self._deep(task)
        if deep is None:
            return mask, None
        inputs = deep(mask)
        return inputs["attention_mask"], inputs["cache"]

    def _deep(self, task: Task) -> DeepPrompts | None:
        """The task's deep prompts; None without them."""
        if task in self.deep_prompts:
            return self.deep_prompts[task]
        return None

    def _spliced(self, task: Task, slot_mask: Tensor) -> AbstractContextManager[None]:
        """Inside, the LM's input embeddings carry the task's prompt vectors at ``slot_mask``."""
        embedding = self.lm.lm.get_input_embeddings()
        return prompts_spliced(embedding, slot_mask, self.prompts[task]())

    @torch.no_grad()
    def generate_prompted(
        self,
        task: Task,
        visual: Tensor,
        queries: Sequence[dict[str, str]],
        decoding: Decoding = Decoding(),
    ) -> list[str]:
        """Continuations of the task's template with the learned prompts, for images
        ``visual`` [B, 1, n, D] (and ``queries``' fields, e.g. each question)."""
        rows = [literal_fields(query) for query in queries]
        batch = self.templates[task].batch(
            self.lm.tokenizer, rows, open_end=True, padding_side="left"
        )
        slots = batch.slot_mask.repeat_interleave(decoding.num_beams, dim=0).to(visual.device)
        with self._spliced(task, slots):
            return generate_from_ids(
                self.lm, visual, batch.input_ids, batch.attention_mask, decoding,
                self._deep(task),
            )  # fmt: skip

    @torch.no_grad()
    def prompt_vectors(self) -> dict[str, Tensor]:
        """Each task's h_1..h_m [m, D], and with deep prompts ``<task>_deep``, its per-layer
        keys and values [layers, 2, kv_heads, m, head_dim]: all inference needs (the
        encoders and projections can be dropped)."""
        vectors = {task: encoder().detach() for task, encoder in self.prompts.items()}
        deep = {f"{task}_deep": p.key_values().detach() for task, p in self.deep_prompts.items()}
        return vectors | deep

    def prompt_spec(self, prefix: str) -> dict[str, Any]:
        """How to use the learned prompts without vlp (``vlp export`` writes it)."""
        return {
            task: {
                "template": template.text,
                "vectors": f"{prefix}.prompt_vectors.{task}",
                "encoder": f"{prefix}.prompts.{task}",
                "use": "each [P] of the template takes the next vector at the LM's input "
                "embeddings; the tokenizer's leading special tokens come first",
                **(self._deep_spec(prefix, task) if self._deep(task) is not None else {}),
            }
            for task, template in self.templates.items()
        }

    def _deep_spec(self, prefix: str, task: Task) -> dict[str, str]:
        return {
            "deep_prefix": f"{prefix}.prompt_vectors.{task}_deep",
            "deep_use": "layer l's keys [l, 0] and values [l, 1] come before the text's in "
            "every attention (the LM's KV cache, e.g. transformers' DynamicCache), the "
            "attention mask extended by m ones; the text's positions start at m",
        }
