"""``vlp predict`` output: image and caption embeddings in safetensors, one file per rank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from safetensors.torch import save_file


class EmbeddingWriter(BasePredictionWriter):
    """Concatenates every predict batch and writes ``OUT/embeddings_rank<r>.safetensors``.

    Keys: ``image_embeddings``, ``image_ids``, ``labels``, ``text_embeddings``,
    ``text_image_ids`` (which image each caption belongs to).
    """

    def __init__(self, output_dir: str = "runs/predictions") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: list[Any],
        batch_indices: Any,
    ) -> None:
        batches = (
            predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        )
        if not batches:
            return
        merged = {
            key: torch.cat([b[key] for b in batches]).contiguous().cpu() for key in batches[0]
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            merged, str(self.output_dir / f"embeddings_rank{trainer.global_rank}.safetensors")
        )
