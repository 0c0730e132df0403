"""``vlp predict`` output, one file per rank: image and caption embeddings in safetensors,
and the captions and answers a text-writing objective (Flamingo) generated, in JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from safetensors.torch import save_file


class _EpochWriter(BasePredictionWriter):
    """Collects every predict batch of the epoch and writes one file per rank to ``output_dir``."""

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
        self.write(_batches(predictions), trainer.global_rank)

    def write(self, batches: list[dict[str, Any]], rank: int) -> None:
        raise NotImplementedError

    def _path(self, stem: str, rank: int, suffix: str) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return self.output_dir / f"{stem}_rank{rank}{suffix}"


class EmbeddingWriter(_EpochWriter):
    """Concatenates every predict batch and writes ``OUT/embeddings_rank<r>.safetensors``.

    Keys: ``image_embeddings``, ``image_ids``, ``labels``, ``text_embeddings``,
    ``text_image_ids`` (which image each caption belongs to); for clips ``clip_embeddings``
    (mean-pooled frames), ``clip_ids``, ``clip_text_embeddings`` and ``text_clip_ids``.
    """

    def write(self, batches: list[dict[str, Any]], rank: int) -> None:
        if not batches:
            return
        merged = {
            key: torch.cat([b[key] for b in batches]).contiguous().cpu()
            for key, value in batches[0].items()
            if isinstance(value, torch.Tensor)
        }
        if merged:
            save_file(merged, str(self._path("embeddings", rank, ".safetensors")))


class GenerationWriter(_EpochWriter):
    """Writes ``OUT/generations_rank<r>.jsonl``: per image ``{"image_id", "caption",
    "answers": [{"question", "answer"}, ...]}``, a zero-shot caption and an answer to
    each question the data has for the image (a manifest's ``meta.questions``); per clip
    ``{"clip_id", "caption"}``."""

    def write(self, batches: list[dict[str, Any]], rank: int) -> None:
        rows = [row for batch in batches for row in batch.get("generations", [])]
        if not rows:
            return
        with open(self._path("generations", rank, ".jsonl"), "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _batches(predictions: list[Any]) -> list[dict[str, Any]]:
    """Lightning nests the batches in a list per dataloader when there are several; a batch
    whose every sample was bad predicts nothing (``{}``) and is left out."""
    batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
    return [batch for batch in batches if batch]
