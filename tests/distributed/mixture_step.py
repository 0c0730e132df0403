"""Run SGD steps of a tiny model on a two-dataset mixture; save losses and weights.

ITC trains on the larger dataset, a plain regression of the pooled image features on
the smaller one (each a mean over its local batch, so 2 ranks × B average to 1 × 2B).

Launched by ``test_mixture_ddp.py`` as ``python -m tests.distributed.mixture_step DEVICES
SCALE OUT [STRATEGY]`` (each dataset's batch is ``SCALE`` × its base size; ``ddp`` or
``fsdp``, as in ``one_step.py``) so that Lightning's launcher can re-run it in each process. Every rank saves its state; rank 0 to ``OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from safetensors.torch import save_file

from tests.distributed.one_step import fit_and_record
from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.mixture import MixturePart
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.transforms import Augment
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import Schedule, VLPModule
from vlp.objectives.base import Objective
from vlp.objectives.contrastive import Contrastive
from vlp.step import Step

STEPS = 2


class PooledNorm(Objective):
    """Mean squared pooled image feature: the simplest loss on the shared tower."""

    name = "pooled_norm"
    needs = frozenset({"images"})

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        return {"norm_loss": step.image().pooled.pow(2).mean()}


def main(devices: int, scale: int, out: Path, strategy: str = "ddp") -> None:
    seed_everything(0)
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [Contrastive(embed_dim=16), PooledNorm()],
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        schedule=Schedule(warmup_steps=0, min_lr_ratio=1.0),
    )
    scenes = {"split": "train", "image_size": 32, "captions_per_image": 1}
    data = VLPDataModule(
        mixture=[
            MixturePart("large", SyntheticScenes(num_images=32, **scenes), 1.0, ["itc"], 2 * scale),
            MixturePart(
                "small",
                SyntheticScenes(num_images=16, seed=1, **scenes),
                0.3,
                ["pooled_norm"],
                scale,
            ),
        ],
        num_workers=0,
        image_size=32,
        augment=Augment(crop_scale=None, brightness_contrast=0.0),
        shuffle=False,
        tokenize=model.tokenize,
        needs=model.batch_needs,
    )
    rank, state = fit_and_record(model, data, devices, STEPS, strategy)
    if rank == 0:
        save_file(state, str(out))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:])
