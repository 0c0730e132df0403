"""Fit a tiny model where one rank's first batch is all corrupt and the validation split has
one image, so the other rank has no validation item; save what each rank saw.

Launched by ``test_bad_data_ddp.py`` as ``python -m tests.distributed.bad_data_fit DEVICES
OUT [STRATEGY]`` (``ddp`` or ``fsdp``, as in ``one_step.py``) so that Lightning's launcher
can re-run it in each process. Rank r saves
``OUT.rank<r>.json``: a parameter checksum before training and after each step, and the
logged metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything

from tests.distributed.one_step import STRATEGIES, whole
from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.formats.manifest import JsonlManifest
from vlp.datamodules.formats.writers import write_records
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive

CORRUPT = (1, 3)  # with 2 ranks and no shuffling, rank 1's first batch of 2 is [1, 3]


def manifests(root: Path, corrupt: tuple[int, ...]) -> tuple[Path, Path]:
    """8 training images (the ``corrupt`` ones unreadable) and a 1-image validation split."""
    scenes = SyntheticScenes("train", num_images=8, image_size=32, captions_per_image=1)
    train = write_records((scenes[i] for i in range(8)), root / "train", "jsonl")
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    for index in corrupt:
        (root / "train" / rows[index]["image"]).write_bytes(b"not a png")
    val = SyntheticScenes("val", num_images=1, image_size=32, captions_per_image=2)
    return train, write_records([val[0]], root / "val", "jsonl")


def checksum(model: torch.nn.Module) -> float:
    """Σ|θ| over the whole weights (gathered from every rank's shards when sharded)."""
    return float(sum(whole(p.detach()).double().abs().sum() for p in model.parameters()))


class Checksums(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.values.append(checksum(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(checksum(pl_module))


def main(
    devices: int,
    out: Path,
    strategy: str = "ddp",
    corrupt: tuple[int, ...] = CORRUPT,
    accumulate: int = 1,
) -> dict:
    seed_everything(0)
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [Contrastive(embed_dim=8)],
    )
    train, val = manifests(out.parent / "data", corrupt)
    data = VLPDataModule(
        train=JsonlManifest(train),
        val=JsonlManifest(val),
        batch_size=2,
        num_workers=0,
        image_size=32,
        shuffle=False,
        tokenize=model.tokenize,
    )
    checksums = Checksums()
    trainer = quiet_trainer(
        devices=devices,
        strategy=STRATEGIES[strategy](devices) if devices > 1 else "auto",
        max_epochs=1,
        num_sanity_val_steps=0,
        accumulate_grad_batches=accumulate,
        callbacks=[checksums],
    )
    trainer.fit(model, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {"checksums": checksums.values, "metrics": metrics}
    Path(f"{out}.rank{trainer.global_rank}.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])
