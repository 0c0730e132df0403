"""Collects embeddings over an evaluation epoch and turns them into the shared metrics.

Metric names are part of the interface: ``retrieval/{i2t,t2i}_r{1,5,10}`` and
``zeroshot/acc``, logged under ``val/`` or ``test/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from vlp.distributed import gather_no_grad
from vlp.encoding import Encoding
from vlp.evaluation.retrieval import retrieval_recall
from vlp.evaluation.zeroshot import class_embeddings, class_prompts, zeroshot_accuracy

if TYPE_CHECKING:
    from vlp.module import VLPModule


class Embedder(Protocol):
    """An objective that defines the shared image–text embedding space (e.g. ITC)."""

    def embed_image(self, image: Encoding) -> Tensor: ...

    def embed_text(self, text: Encoding) -> Tensor: ...


class Evaluator:
    """Accumulates image/text embeddings of one evaluation epoch on every rank."""

    def __init__(self, model: VLPModule, ks: tuple[int, ...] = (1, 5, 10)) -> None:
        self._model = model
        self.ks = ks
        self._parts: dict[str, list[Tensor]] = {}

    @property
    def embedder(self) -> Embedder | None:
        for objective in self._model.objectives:
            if hasattr(objective, "embed_image") and hasattr(objective, "embed_text"):
                return objective
        return None

    @torch.no_grad()
    def embed(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Normalised embeddings of a batch's images and captions, with their ids."""
        embedder = self.embedder
        if embedder is None:
            raise ValueError("no objective defines an image–text embedding (add e.g. ITC)")
        encoders = self._model.encoders
        return {
            "image_embeddings": embedder.embed_image(encoders.vision(batch["images"])),
            "image_ids": batch["image_ids"],
            "labels": batch["labels"],
            "text_embeddings": embedder.embed_text(
                encoders.text(batch["text_ids"], batch["text_mask"])
            ),
            "text_image_ids": batch["text_image_ids"],
        }

    def add(self, batch: dict[str, Any]) -> None:
        if self.embedder is None:
            return
        for name, value in self.embed(batch).items():
            self._parts.setdefault(name, []).append(value)

    def compute(
        self, class_names: list[str] | None, prompt_templates: list[str] | None
    ) -> dict[str, float]:
        """Metrics over everything added since the last call, from all ranks; then reset."""
        if not self._parts:
            return {}
        parts = {name: gather_no_grad(torch.cat(values)) for name, values in self._parts.items()}
        self._parts = {}
        similarity = parts["image_embeddings"] @ parts["text_embeddings"].T
        metrics = {
            f"retrieval/{name}": value
            for name, value in retrieval_recall(
                similarity, parts["image_ids"], parts["text_image_ids"], self.ks
            ).items()
        }
        labels = parts["labels"]
        if class_names and prompt_templates and (labels >= 0).any():
            classes = self._class_embeddings(class_names, prompt_templates)
            metrics["zeroshot/acc"] = zeroshot_accuracy(parts["image_embeddings"], classes, labels)
        return metrics

    def _class_embeddings(self, class_names: list[str], templates: list[str]) -> Tensor:
        text_encoder = self._model.encoders.text
        tokens = {
            k: v.to(self._model.device)
            for k, v in text_encoder.tokenize(class_prompts(class_names, templates)).items()
        }
        with torch.no_grad():
            prompts = self.embedder.embed_text(text_encoder(**tokens))
        return class_embeddings(prompts, len(class_names))
