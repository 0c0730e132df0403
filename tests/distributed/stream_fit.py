"""Train on WebDataset shards of unequal sizes (4, 4 and 2 images): with 2 ranks, rank 0
streams shards 0 and 2 (3 batches of 2) and rank 1 shard 1 (2 batches) per epoch.

Launched by ``test_stream_ddp.py`` as ``python -m tests.distributed.stream_fit DEVICES OUT
[EPOCHS]`` so that Lightning's DDP launcher can re-run it in each process. Rank r saves
``OUT.rank<r>.json``: its optimizer steps, a parameter checksum and the logged metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightning.pytorch import seed_everything

from tests.distributed.bad_data_fit import checksum
from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.formats.writers import open_written, write_records
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive


def main(devices: int, out: Path, epochs: int = 1) -> dict:
    seed_everything(0)
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [Contrastive(embed_dim=8)],
    )
    scenes = SyntheticScenes("train", num_images=10, image_size=32, captions_per_image=1)
    shards = write_records((scenes[i] for i in range(10)), out.parent / "shards", "webdataset", 4)
    data = VLPDataModule(
        train=open_written(shards, "webdataset"),
        batch_size=2,
        num_workers=0,
        image_size=32,
        tokenize=model.tokenize,
    )
    trainer = quiet_trainer(
        devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=epochs, max_steps=10
    )
    trainer.fit(model, data)
    result = {
        "steps": trainer.global_step,
        "checksum": checksum(model),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    Path(f"{out}.rank{trainer.global_rank}.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:]))
