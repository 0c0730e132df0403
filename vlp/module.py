"""The one LightningModule: shared encoders, configured objectives, weighted sum."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from vlp.compilation import compile_stacks
from vlp.datamodules.lm_text import LMTokenize
from vlp.datamodules.mixture import DatasetTag, batch_rows, mixture_parts, step_rows
from vlp.datamodules.records import SKIP_REASONS
from vlp.distributed import any_rank
from vlp.encoders import Encoders, FusionConfig, TextEncoder, VisionEncoder
from vlp.encoders.text import Tokenize
from vlp.evaluation.evaluator import Evaluator
from vlp.gradient_cache import ChunkedEncoders
from vlp.objectives.base import Objective, weighted_total
from vlp.optim import apply_lr_multipliers, parameter_groups, warmup_cosine
from vlp.prompting.freezing import ParameterCount, train_only
from vlp.seeding import seed_step
from vlp.sharding import gather_whole, is_shard, shard_again, shard_model
from vlp.staged import init_from_checkpoint
from vlp.step import Step
from vlp.teachers import EMATeacher


def default_optimizer(params: Any) -> torch.optim.Optimizer:
    return AdamW(params, lr=1e-4, weight_decay=0.02)  # ALBEF/TCL pretraining


@dataclass(frozen=True)
class Schedule:
    """Per-step LR schedule: linear warm-up then cosine decay to ``min_lr_ratio`` × lr."""

    warmup_steps: int = 0
    min_lr_ratio: float = 0.1


class VLPModule(LightningModule):
    """Encode once, hand the step to every objective, sum their weighted losses.

    Args:
        vision_encoder: the image tower (any timm model).
        text_encoder: the text tower (any Hugging Face encoder) and its tokenizer.
        objectives: the pretraining objectives, each with its own weight.
        fusion: sizes of the text-attends-to-image encoder, built only when an
            objective needs it (ITM, MLM), so unused weights never reach DDP.
        optimizer: built from the parameter groups (no decay on vectors).
        schedule: the learning-rate schedule.
        freeze: names of modules to keep fixed, e.g. ``encoders.text`` to
            train an image tower against a pretrained text tower (LiT-style);
            frozen modules also stay in eval mode (no dropout).
        lr_multipliers: learning-rate factor per module name, e.g.
            ``{encoders.text: 0.1}`` to fine-tune a pretrained tower gently.
        init_from: a vlp checkpoint (``.ckpt``) whose encoder and objective weights start
            this model, read weights-only (staged training: e.g. CoOp on an ITC run, whose
            objectives come first in the same order); weights it lacks keep their
            initialisation, and EMA teachers start as copies of the loaded encoders.
        activation_checkpointing: recompute every layer's activations in the backward
            pass instead of keeping them (towers, fusion, Flamingo's resampler and LM
            layers): less memory for about one more forward pass of compute.
        compile_layers: ``torch.compile`` each layer of the towers and their teachers
            (``vlp.compilation``): fewer, fused kernels; not with FSDP.
        tower_chunk_size: encode a training batch this many rows at a time and cache the
            gradients (``vlp.gradient_cache``): the losses, and contrastive negatives, stay
            the whole batch's, the towers' activations only a chunk's; costs one more
            forward pass of the towers; not with FSDP or fp16.

    An objective with ``prompt_only`` (CoOp) freezes everything outside such objectives.
    """

    def __init__(
        self,
        vision_encoder: VisionEncoder,
        text_encoder: TextEncoder,
        objectives: list[Objective],
        fusion: FusionConfig | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        schedule: Schedule = Schedule(),
        freeze: tuple[str, ...] = (),
        lr_multipliers: dict[str, float] | None = None,
        init_from: str | None = None,
        activation_checkpointing: bool = False,
        compile_layers: bool = False,
        tower_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("model.objectives is empty: configure at least one objective")
        fuses = any("fusion" in o.needs for o in objectives)
        if fuses and fusion is None:
            raise ValueError(
                "an objective needs the fusion encoder: set model.fusion in the config"
            )
        self.encoders = Encoders(vision_encoder, text_encoder, fusion if fuses else None)
        self.objectives = nn.ModuleList(objectives)
        for objective in objectives:
            objective.bind(self.encoders)
        self.objective_names = _unique_names([o.name for o in objectives])
        if init_from:
            kept = init_from_checkpoint(self, init_from, ("encoders.", "objectives."))
            rank_zero_info(f"vlp: started from {init_from}; initialised anew: {kept or 'none'}")
        specs = {spec.key: spec for o in objectives for spec in o.teacher_specs()}
        self.teachers = nn.ModuleDict(
            {
                key: EMATeacher.from_spec(self._online(spec.source), spec)
                for key, spec in specs.items()
            }
        )
        if activation_checkpointing:  # after the teachers are copied: they keep no activations
            self.encoders.checkpoint_activations()
            for objective in objectives:
                objective.checkpoint_activations()
        self.compile_layers = compile_layers
        if compile_layers:  # after the teachers are copied, so each compiles its own layers
            compiled = compile_stacks(self.encoders, self.teachers)
            rank_zero_info(f"vlp: {compiled} encoder and teacher layers compiled")
        if tower_chunk_size is not None and tower_chunk_size < 1:
            raise ValueError(f"model.tower_chunk_size must be at least 1, got {tower_chunk_size}")
        self.tower_chunk_size = tower_chunk_size
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.frozen = self._freeze(tuple(freeze)) + self._freeze_all_but_prompts()
        self.lr_multipliers = dict(lr_multipliers or {})
        self.evaluator = Evaluator(self)
        self._skipping = False  # this training batch is skipped (every rank's decision)
        self._window_trained = False  # a batch since the last optimizer step was not

    def _freeze(self, prefixes: tuple[str, ...]) -> list[nn.Module]:
        modules = [module for name, module in self.named_modules() if name in prefixes]
        unknown = set(prefixes) - {name for name, _ in self.named_modules()}
        if unknown:
            raise ValueError(f"model.freeze: no module named {sorted(unknown)}")
        for module in modules:
            module.requires_grad_(False).eval()
        return modules

    def _freeze_all_but_prompts(self) -> list[nn.Module]:
        """Prompt tuning: only the ``prompt_only`` objectives learn; the rest runs in eval mode."""
        prompts = [o for o in self.objectives if o.prompt_only]
        if not prompts:
            return []
        train_only(self, *(module for o in prompts for module in o.prompt_modules()))
        frozen = [self.encoders, *(o for o in self.objectives if not o.prompt_only)]
        for module in frozen:
            module.eval()
        return frozen

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy``, shard the model (``vlp.sharding``)."""
        mesh = self.device_mesh
        if mesh is None:
            return
        if mesh["tensor_parallel"].size() != 1:
            raise ValueError(
                "trainer.strategy: vlp shards over data-parallel ranks only (FSDP); "
                "set ModelParallelStrategy's tensor_parallel_size: 1"
            )
        if self.compile_layers:
            raise ValueError(
                "model.compile_layers: compiled layers are not sharded by vlp's FSDP; "
                "turn one of them off"
            )
        if self.tower_chunk_size is not None:
            raise ValueError(
                "model.tower_chunk_size: vlp's FSDP does not re-run sharded towers chunk by "
                "chunk; turn one of them off"
            )
        shard_model(self, mesh["data_parallel"], not_stacks=(self.objectives,))
        if getattr(self.trainer.strategy, "_save_distributed_checkpoint", False):
            rank_zero_warn(
                "trainer.strategy saves sharded checkpoint folders, which vlp export and "
                "DDP or one-device runs cannot read (their metadata is pickled): set "
                "save_distributed_checkpoint: false"
            )

    def on_train_start(self) -> None:
        """Report how much of the model trains (all of it, or a prompt of a frozen model), and
        warn where gradient accumulation does not do what it seems to."""
        parameters = list(self.parameters())
        count = ParameterCount(
            trainable=sum(p.numel() for p in parameters if p.requires_grad),
            total=sum(p.numel() for p in parameters),
        )
        rank_zero_info(f"vlp: {count}")
        self.log("train/trainable_params", float(count.trainable), batch_size=1)
        self._warn_of_accumulated_negatives()

    def on_fit_start(self) -> None:
        """Refuse fp16 with gradient caching (on a GPU: Lightning runs 16-mixed as bf16 on
        the CPU) before any step is spent."""
        if self.tower_chunk_size is not None and str(self.trainer.precision).startswith("16"):
            raise ValueError(
                f"model.tower_chunk_size with trainer.precision={self.trainer.precision}: the "
                "cached gradients are computed unscaled and would underflow in fp16; use "
                "bf16-mixed or 32"
            )

    def _warn_of_accumulated_negatives(self) -> None:
        accumulated = self.trainer.accumulate_grad_batches
        names = [n for n, o in zip(self.objective_names, self.objectives, strict=True)
                 if o.batch_negatives]  # fmt: skip
        if accumulated > 1 and names:
            rank_zero_warn(
                f"trainer.accumulate_grad_batches={accumulated}: {', '.join(names)} draw their "
                "negatives from each batch (all ranks'), not from the accumulated batches; for "
                "more negatives raise data.batch_size with model.tower_chunk_size to bound "
                "the memory, or use a momentum queue (albef, tcl)"
            )

    def train(self, mode: bool = True) -> VLPModule:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    @property
    def tokenize(self) -> Tokenize:
        """How captions become ids for this model; the data module is linked to it."""
        return self.encoders.text.tokenize

    @property
    def lm_tokenize(self) -> LMTokenize | None:
        """How captions and documents become ids of the objective that owns a language model
        (Flamingo), if any; the data module is linked to it."""
        owners = [o for o in self.objectives if "lm_text" in o.needs]
        if len(owners) > 1:
            raise ValueError("several objectives read lm_text: a batch holds one LM's text")
        return owners[0].lm_tokenize if owners else None

    @property
    def batch_needs(self) -> frozenset[str]:
        """Union of what the objectives read; the data module builds only these fields."""
        return frozenset().union(*(o.needs for o in self.objectives))

    def _online(self, source: str) -> nn.Module:
        module = getattr(self.encoders, source, None)
        if not isinstance(module, nn.Module):
            raise ValueError(f"teacher source {source!r} is not an encoder (vision, text, fusion)")
        return module

    def step(
        self, batch: dict[str, Any], encoders: Encoders | ChunkedEncoders | None = None
    ) -> Step:
        return Step(
            batch,
            encoders or self.encoders,
            self.teachers,
            self.evaluator.embedder,
            self.global_step,
        )

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Seed the step's draws (dropout, hard negatives, MLM masks) from where it is, so a
        resumed run replays them; decide, the same on every rank, whether this step is
        skipped: it is when some rank's batch (or a mixture dataset's batch) lost every
        sample to bad data."""
        # not batch_idx: Lightning restarts it part-way after resuming at an epoch's end
        seed_step(self.trainer.fit_loop.epoch_loop.total_batch_idx, self.global_rank)
        empty = any(batch_rows(part) == 0 for _, part in mixture_parts(batch))
        self._skipping = any_rank(empty, self.device)
        # with accumulation, one empty batch in a window of real ones keeps the update
        self._window_trained = self._window_trained or not self._skipping

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One batch, or a mixture's batch of every dataset: Σ_d λ_d · Σ_objectives w·loss,
        so one backward accumulates every dataset's gradient into this step.

        A skipped step (see :meth:`on_train_batch_start`) returns a zero that touches every
        trainable parameter: each rank still runs DDP's gradient all-reduce, and
        :meth:`optimizer_step` then leaves weights, optimizer state and teachers as they were.
        Sharded, it touches the parameters gathered for the step (the root unit's): every
        rank skips, so no rank runs the other units' collectives.
        """
        parts = mixture_parts(batch)
        self._log_skipped(sum((part.get("skipped", Counter()) for _, part in parts), Counter()))
        skipping = self._skipping
        self.log("data/skipped_steps", float(skipping), on_step=False, on_epoch=True,
                 reduce_fx="sum", batch_size=1)  # fmt: skip
        if skipping:
            touched = (p for p in self.parameters() if p.requires_grad and not is_shard(p))
            return sum(p.sum() for p in touched) * 0.0
        chunked = (
            None
            if self.tower_chunk_size is None
            else ChunkedEncoders(self.encoders, self.tower_chunk_size)
        )
        losses = [self._dataset_loss(part, tag, chunked) for tag, part in parts]
        total = sum(losses[1:], losses[0])
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=step_rows(batch))
        return total if chunked is None else chunked.surrogate(total, self.parameters())

    def _dataset_loss(
        self, batch: dict[str, Any], tag: DatasetTag | None, encoders: ChunkedEncoders | None
    ) -> Tensor:
        """λ · the weighted objectives' losses on one dataset's batch (λ = 1 outside a mixture)."""
        names = self.objective_names if tag is None or tag.objectives is None else tag.objectives
        unknown = set(names) - set(self.objective_names)
        if unknown:
            raise ValueError(f"data.mixture names objectives {sorted(unknown)}; the model has "
                             f"{self.objective_names}")  # fmt: skip
        prefix = "train" if tag is None else f"train/{tag.name}"
        step = self.step(batch, encoders)
        batch_size = batch_rows(batch)
        total: Tensor | None = None
        for name, objective in zip(self.objective_names, self.objectives, strict=True):
            if name not in names:
                continue
            terms = objective(step)
            loss = weighted_total(terms, objective.weight)
            total = loss if total is None else total + loss
            for term, value in terms.items():
                self.log(f"{prefix}/{name}/{term}", value.detach(), batch_size=batch_size)
        if tag is None:
            return total
        self.log(f"{prefix}/loss", total.detach(), batch_size=batch_size)
        return tag.weight * total

    def _log_skipped(self, skipped: Counter) -> None:
        """Bad samples dropped by the data pipeline, summed over the epoch and all ranks."""
        for reason in SKIP_REASONS:
            count = torch.tensor(float(skipped.get(reason, 0)), device=self.device)
            self.log(
                f"data/skipped_{reason}",
                count,
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                sync_dist=True,
                batch_size=1,
            )

    def on_train_epoch_end(self) -> None:
        """Streamed batches dropped this epoch so that every rank ends it at the same step, and
        streamed samples dropped in the shorter batches that end the data workers' shares."""
        for name in ("dropped_batches", "dropped_tail_samples"):
            dropped = self._datamodule_attr(name)
            if dropped is not None:
                self.log(f"data/{name}", float(dropped), reduce_fx="sum", sync_dist=True)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Teachers move once per optimizer step, after it, from the updated online weights.

        A step whose batches (every batch of an accumulation window) were all skipped runs
        only the closure (forward and backward, for DDP's collectives): no update, so AdamW's
        decay and momentum do not move weights on a step without data.
        """
        trained, self._window_trained = self._window_trained, False
        if not trained:
            kwargs.get("optimizer_closure", args[-1] if args else None)()
            return
        super().optimizer_step(*args, **kwargs)
        for objective in self.objectives:
            objective.after_optimizer_step()
        for module in self.modules():
            if isinstance(module, EMATeacher):
                module.update()

    def on_validation_start(self) -> None:
        """Evaluation runs on whole weights, sharded or not (``vlp.sharding.gather_whole``)."""
        gather_whole(self)

    def on_validation_end(self) -> None:
        shard_again(self)

    on_test_start = on_predict_start = on_validation_start
    on_test_end = on_predict_end = on_validation_end

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluator.add(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluator.add(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _log_evaluation(self, split: str) -> None:
        for name, value in self.evaluator.compute(
            self._datamodule_attr("class_names"), self._datamodule_attr("prompt_templates")
        ).items():
            self.log(f"{split}/{name}", value, sync_dist=False, rank_zero_only=False)

    def _datamodule_attr(self, name: str) -> Any:
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, name, None)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.evaluator.predict(batch)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(
            parameter_groups(self.named_parameters(), self.lr_multipliers)
        )
        apply_lr_multipliers(optimizer)
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps) or total_steps < 1:
            raise ValueError(
                "the learning-rate schedule needs the run's length in optimizer steps: set "
                "trainer.max_steps (a streamed dataset has no length, so max_epochs cannot "
                "give it)"
            )
        factor = warmup_cosine(
            self.schedule.warmup_steps, int(total_steps), self.schedule.min_lr_ratio
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, factor), "interval": "step"},
        }


def _unique_names(names: list[str]) -> list[str]:
    """Logging prefixes: ``itc``, or ``itc_0``/``itc_1`` when an objective appears twice."""
    counts = Counter(names)
    seen: Counter = Counter()
    unique = []
    for name in names:
        unique.append(f"{name}_{seen[name]}" if counts[name] > 1 else name)
        seen[name] += 1
    return unique
