"""Run SGD steps of a tiny model on the first synthetic samples; save losses and weights.

Launched by ``test_ddp_equivalence.py`` as ``python -m tests.distributed.one_step DEVICES
BATCH OUT OBJECTIVE STEPS [STRATEGY [RECOMPUTE [CHUNK]]]`` so that Lightning's launcher can
re-run it in each process. STRATEGY is ``ddp`` (the default) or ``fsdp`` (every weight sharded
over the processes: Lightning's ``ModelParallelStrategy`` and ``vlp.sharding``);
RECOMPUTE ``1`` turns on the model's activation checkpointing; CHUNK > 0 makes the towers
encode that many rows at a time (``model.tower_chunk_size``).
OBJECTIVE is ``itc`` (in-batch, gathered with gradients), ``siglip`` (likewise, sigmoid
loss on every pair), ``flamingo`` (ITC and the LM
loss of a tiny frozen GPT-2 through the resampler and gated cross-attention), ``tcl`` (momentum
distillation, queues, IMC and LMI; deterministic: no second view, no dropout) or
``data2vec`` (multimodal: block-masked images and span-masked captions through
the fusion encoder, EMA teachers with a ramped τ; masks drawn per sample while
batching). Every rank saves its state; ranks above 0 to ``OUT.rank<r>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, Trainer, seed_everything
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor
from torch.utils.data import Dataset

from tests.objectives.flamingo_tiny import TINY_LM, tiny_flamingo
from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.transforms import Augment
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.module import Schedule, VLPModule
from vlp.objectives.base import Objective
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.data2vec import Data2Vec, ImageBranch, Targets, TextBranch
from vlp.objectives.sigmoid import SigmoidContrastive
from vlp.objectives.tcl import TripleContrastive
from vlp.sharding import sharding_strategy
from vlp.teachers import DecaySchedule


class RecordLoss(Callback):
    """The global-batch loss: the mean of the ranks' local losses (equal batch sizes)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().clone()
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        self.losses.append(loss.item())


def objectives(name: str) -> list[Objective]:
    if name == "itc":
        return [Contrastive(embed_dim=16)]
    if name == "siglip":
        return [SigmoidContrastive(embed_dim=16)]
    if name == "flamingo":  # beside ITC on the shared vision tower; no dropout in the LM
        lm = {**TINY_LM, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        return [Contrastive(embed_dim=16), tiny_flamingo(lm_config=lm)]
    if name == "data2vec":
        return [
            Data2Vec(
                modality="multimodal",
                image=ImageBranch(min_block=2, targets=Targets(top_k=2, layer_output="ffn")),
                text=TextBranch(mask_ratio=0.5, targets=Targets(top_k=3)),
                ema=DecaySchedule(0.9, 0.99, 2),
            )
        ]
    return [
        TripleContrastive(
            embed_dim=16, queue_size=64, momentum_view="images", momentum_dropout=False
        )
    ]


def main(
    devices: int,
    batch_size: int,
    out: Path,
    name: str,
    steps: int,
    strategy: str = "ddp",
    recompute: bool = False,
    tower_chunk_size: int | None = None,
) -> None:
    seed_everything(0)
    model = tiny_model(name, recompute, tower_chunk_size)
    train = SyntheticScenes("train", num_images=64, image_size=32, captions_per_image=1)
    data = plain_data(train, batch_size, model)
    rank, state = fit_and_record(model, data, devices, steps, strategy)
    save_file(state, str(rank_path(out, rank)))


def tiny_model(
    name: str, recompute: bool = False, tower_chunk_size: int | None = None
) -> VLPModule:
    """Tiny towers and fusion encoder under the ``name`` objectives, trained by SGD at a
    constant learning rate (so one step's weights show its gradient)."""
    return VLPModule(
        VisionEncoder(
            "vit_tiny_patch16_224",
            image_size=32,
            model_kwargs=TINY_VISION,
        ),
        TextEncoder(config=TINY_TEXT, max_length=16),
        objectives(name),
        fusion=FusionConfig(depth=2, heads=2),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        schedule=Schedule(warmup_steps=0, min_lr_ratio=1.0),
        activation_checkpointing=recompute,
        tower_chunk_size=tower_chunk_size,
    )


def plain_data(train: Dataset, batch_size: int, model: VLPModule) -> VLPDataModule:
    """``train`` in order, without augmentation or loader workers."""
    return VLPDataModule(
        train=train,
        batch_size=batch_size,
        num_workers=0,
        image_size=32,
        augment=Augment(crop_scale=None, brightness_contrast=0.0),
        shuffle=False,
        tokenize=model.tokenize,
        lm_tokenize=model.lm_tokenize,
        needs=model.batch_needs,
    )


def fit_and_record(
    model: VLPModule, data: VLPDataModule, devices: int, steps: int, strategy: str = "ddp"
) -> tuple[int, dict[str, torch.Tensor]]:
    """Fit ``steps`` optimizer steps on ``devices`` CPU processes; this rank and its final
    weights (whole, gathered from the shards under ``fsdp``), with the global-batch loss
    of every step under ``loss`` and the number of sharded parameters under ``sharded``."""
    recorder = RecordLoss()
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=STRATEGIES[strategy](devices) if devices > 1 else "auto",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, data)
    state = {k: whole(v).clone() for k, v in model.state_dict().items()}  # tied: own copies
    state["loss"] = torch.tensor(recorder.losses)
    state["sharded"] = torch.tensor(sum(isinstance(p, DTensor) for p in model.parameters()))
    return trainer.global_rank, state


STRATEGIES = {
    "ddp": lambda devices: "ddp",
    "fsdp": sharding_strategy,
}


def whole(value: torch.Tensor) -> torch.Tensor:
    """A sharded weight gathered from every rank (every rank must call this together)."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def rank_path(out: Path, rank: int) -> Path:
    return out if rank == 0 else out.with_name(f"{out.name}.rank{rank}")


if __name__ == "__main__":
    strategy, recompute, chunk = (sys.argv[6:] + ["ddp", "0", "0"][len(sys.argv[6:]) :])[:3]
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]),
         strategy, recompute == "1", int(chunk) or None)  # fmt: skip
