"""Collects embeddings over an evaluation epoch and turns them into the shared metrics.

Metric names are part of the interface, logged under ``val/`` or ``test/``:
``retrieval/{i2t,t2i}_r{1,5,10}``, ``zeroshot/acc`` (with a prompt-tuning objective
such as CoOp: of its learned prompts, and ``zeroshot/acc_hand`` of the hand-written
templates), and with an ITM objective and a fusion encoder
``retrieval_itm/{i2t,t2i}_r{1,5,10}`` (ITM re-ranking); ``compositional/itc_acc`` (and
``compositional/itm_acc``) when the data carries hard-negative captions;
``video_retrieval/{v2t,t2v}_r{1,5,10}`` instead of all these when the split is clips
(:mod:`vlp.evaluation.video_retrieval`), and ``video_caption/{cider,bleu4}_{k}shot``
with an objective that writes text; ``linear_probe/acc`` of the frozen image features whenever
the images have labels, whatever the objectives, and ``linear_probe/{name}_acc`` for each
attribute the records carry (the embedded scenes': ``colour``, ``count``); with an
objective that writes text
(Flamingo) ``caption/{cider,bleu4}_{k}shot`` and ``vqa/acc_{k}shot``
(:mod:`vlp.evaluation.generative`); ``data/skipped_{reason}``, the bad samples the
data pipeline dropped from the split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from vlp.datamodules.records import SKIP_REASONS
from vlp.distributed import gather_fields, gather_objects
from vlp.encoding import Encoding
from vlp.evaluation.compositional import compositional_outcomes
from vlp.evaluation.generative import FewShotEvaluation
from vlp.evaluation.linear_probe import linear_probe_accuracy, probe_features
from vlp.evaluation.rerank import TokenStore, fusion_scorer, itm_reranked_recall
from vlp.evaluation.retrieval import retrieval_recall
from vlp.evaluation.video_retrieval import mean_pooled, video_retrieval_recall
from vlp.evaluation.zeroshot import class_embeddings, class_prompts, zeroshot_accuracy

if TYPE_CHECKING:
    from vlp.encoders.text import TextEncoder
    from vlp.module import VLPModule


class Embedder(Protocol):
    """An objective that defines the shared image–text embedding space (e.g. ITC)."""

    def embed_image(self, image: Encoding) -> Tensor: ...

    def embed_text(self, text: Encoding) -> Tensor: ...

    def score_weights(self, prefix: str) -> dict[str, str]: ...


class Matcher(Protocol):
    """An objective that scores fused (text, image) pairs (e.g. ITM)."""

    rerank_k: int

    def match_logit(self, fused: Encoding) -> Tensor: ...


class PromptClassifier(Protocol):
    """An objective that learns the class prompts of zero-shot classification (e.g. CoOp)."""

    class_names: list[str]

    def class_embeddings(
        self, text_encoder: TextEncoder, embed_text: Callable[[Encoding], Tensor]
    ) -> Tensor: ...

    def prompt_spec(self, prefix: str) -> dict[str, Any]:
        """Where the prompts' weights are and how they are used, for ``vlp export``."""
        ...


class Evaluator:
    """Accumulates image/text embeddings of one evaluation epoch on every rank."""

    def __init__(self, model: VLPModule, ks: tuple[int, ...] = (1, 5, 10)) -> None:
        self._model = model
        self.ks = ks
        self._parts: dict[str, list[Tensor]] = {}
        self._tokens = TokenStore()
        self._skipped: Counter = Counter()
        self._attributes: dict[int, dict[str, int]] = {}  # image id -> its probe attributes
        self._fewshot: FewShotEvaluation | None = None

    @property
    def embedder(self) -> Embedder | None:
        for objective in self._model.objectives:
            if hasattr(objective, "embed_image") and hasattr(objective, "embed_text"):
                return objective
        return None

    @property
    def matcher(self) -> Matcher | None:
        """The objective that scores fused pairs, when there is one and a fusion encoder."""
        if self._model.encoders.fusion is None:
            return None
        for objective in self._model.objectives:
            if hasattr(objective, "match_logit"):
                return objective
        return None

    @property
    def prompt_classifier(self) -> PromptClassifier | None:
        for objective in self._model.objectives:
            if hasattr(objective, "class_embeddings") and hasattr(objective, "class_names"):
                return objective
        return None

    @property
    def rerank_k(self) -> int:
        matcher = self.matcher
        return 0 if matcher is None else getattr(matcher, "rerank_k", 16)

    @property
    def fewshot(self) -> FewShotEvaluation | None:
        """Few-shot captioning and VQA, when an objective writes text (Flamingo)."""
        if self._fewshot is None:
            for objective in self._model.objectives:
                if hasattr(objective, "generate") and hasattr(objective, "fewshot"):
                    self._fewshot = FewShotEvaluation(
                        objective, self._model.encoders.vision, self._image_features,
                        self._datamodule,
                    )  # fmt: skip
                    break
        return self._fewshot

    def _image_features(self, image: Encoding) -> Tensor:
        """The model's own image embedding: the shared space's if there is one, else pooled."""
        embedder = self.embedder
        return image.pooled if embedder is None else embedder.embed_image(image)

    def _datamodule(self) -> Any:
        # the trainer's, when there is one (the module's ``trainer`` property raises otherwise)
        return getattr(self._model._trainer, "datamodule", None)

    def _require_embedder(self) -> Embedder:
        embedder = self.embedder
        if embedder is None:
            raise ValueError("no objective defines an image–text embedding (add e.g. ITC)")
        return embedder

    @torch.no_grad()
    def embed(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Normalised embeddings of a batch's images and captions, with their ids."""
        self._require_embedder()
        image, text = self._encode(batch)
        return self._embeddings(batch, image, text)

    def _encode(self, batch: dict[str, Any]) -> tuple[Encoding, Encoding]:
        encoders = self._model.encoders
        return encoders.vision(batch["images"]), encoders.text(
            batch["text_ids"], batch["text_mask"]
        )

    def _embeddings(
        self, batch: dict[str, Any], image: Encoding, text: Encoding
    ) -> dict[str, Tensor]:
        embedder = self._require_embedder()
        return {
            "image_embeddings": embedder.embed_image(image),
            "image_ids": batch["image_ids"],
            "labels": batch["labels"],
            "text_embeddings": embedder.embed_text(text),
            "text_image_ids": batch["text_image_ids"],
        }

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> dict[str, Any]:
        """What ``vlp predict`` writes: the embeddings when an objective defines the shared
        space, and ``generations`` (captions, answers) when an objective writes text; nothing
        for a batch whose every sample was bad."""
        if "clips" in batch:
            frames, embedder, fewshot = self._encode_clips(batch)
            out = {} if embedder is None else self._clip_embeddings(batch, frames, embedder)
            if fewshot is not None:
                out["generations"] = fewshot.predict_clips(batch, frames)
            return out
        if len(batch["images"]) == 0:
            return {}
        out: dict[str, Any] = {} if self.embedder is None else self.embed(batch)
        if self.fewshot is not None:
            image = self._model.encoders.vision(batch["images"])
            out["generations"] = self.fewshot.predict(batch, image)
        if not out:
            raise ValueError("nothing to predict: no objective embeds images or writes text")
        return out

    @torch.no_grad()
    def add(self, batch: dict[str, Any]) -> None:
        """One evaluation batch; one whose every sample was bad only adds to the skip counts."""
        self._skipped.update(batch.get("skipped", {}))
        if "clips" in batch:
            self._add_clips(batch)
            return
        if len(batch["images"]) == 0:
            return
        self._record_attributes(batch)
        embedder = self.embedder
        image = self._model.encoders.vision(batch["images"])
        if self.fewshot is not None:
            self.fewshot.add(batch, image)
        if embedder is None:
            self._add_parts(self._probe_parts(batch, image))
            return
        text = self._model.encoders.text(batch["text_ids"], batch["text_mask"])
        matcher = self.matcher
        parts = {**self._probe_parts(batch, image), **self._embeddings(batch, image, text)}
        parts.update(
            compositional_outcomes(
                batch,
                image,
                text,
                embedder.embed_image,
                embedder.embed_text,
                self._model.encoders.text,
                self._model.encoders.fusion,
                None if matcher is None else matcher.match_logit,
            )
        )
        self._add_parts(parts)
        if self.rerank_k > 0:
            self._tokens.add(image, text)

    def _add_clips(self, batch: dict[str, Any]) -> None:
        """Clips: retrieval by mean-pooled frame embeddings in the image–text space, and
        zero-shot captions from an objective that writes text."""
        frames, embedder, fewshot = self._encode_clips(batch)
        if fewshot is not None:
            fewshot.add_clips(batch, frames)
        if embedder is not None:
            self._add_parts(self._clip_embeddings(batch, frames, embedder))

    def _encode_clips(
        self, batch: dict[str, Any]
    ) -> tuple[Encoding, Embedder | None, FewShotEvaluation | None]:
        """Every frame of the batch's clips encoded once, and the objectives that read them."""
        embedder, fewshot = self.embedder, self.fewshot
        if embedder is None and fewshot is None:
            raise ValueError(
                "clips are evaluated by video–text retrieval in an image–text embedding or by "
                "captioning: add an objective that defines one (e.g. ITC) or writes text"
            )
        return self._model.encoders.vision(batch["clips"].flatten(0, 1)), embedder, fewshot

    def _clip_embeddings(
        self, batch: dict[str, Any], frames: Encoding, embedder: Embedder
    ) -> dict[str, Tensor]:
        per_frame = embedder.embed_image(frames).unflatten(0, batch["clips"].shape[:2])
        text = self._model.encoders.text(batch["text_ids"], batch["text_mask"])
        return {
            "clip_embeddings": mean_pooled(per_frame),
            "clip_ids": batch["clip_ids"],
            "clip_text_embeddings": embedder.embed_text(text),
            "text_clip_ids": batch["text_clip_ids"],
        }

    def _probe_parts(self, batch: dict[str, Any], image: Encoding) -> dict[str, Tensor]:
        return {
            "probe_features": probe_features(image),
            "image_ids": batch["image_ids"],
            "labels": batch["labels"],
        }

    def _record_attributes(self, batch: dict[str, Any]) -> None:
        """Each image's probe attributes by id: Python dicts, gathered as objects in compute."""
        for image_id, attributes in zip(
            batch["image_ids"].tolist(), batch.get("attributes", []), strict=False
        ):
            if attributes:
                self._attributes[image_id] = attributes

    def _add_parts(self, parts: dict[str, Tensor]) -> None:
        for name, value in parts.items():
            self._parts.setdefault(name, []).append(value)

    def compute(
        self, class_names: list[str] | None, prompt_templates: list[str] | None
    ) -> dict[str, float]:
        """Metrics over everything added since the last call, from all ranks; then reset."""
        generated = {} if self.fewshot is None else self.fewshot.compute()
        device = self._model.device
        local = {name: torch.cat(values) for name, values in self._parts.items()}
        local["skipped"] = torch.tensor([[self._skipped[r] for r in SKIP_REASONS]], device=device)
        parts = gather_fields(local, device)  # every rank joins, even one without batches
        attributes = {k: v for part in gather_objects(self._attributes) for k, v in part.items()}
        tokens, self._parts, self._tokens, self._skipped = self._tokens, {}, TokenStore(), Counter()
        self._attributes = {}
        skipped = parts.pop("skipped").sum(0).tolist()
        metrics = generated | {
            f"data/skipped_{r}": float(n) for r, n in zip(SKIP_REASONS, skipped, strict=True)
        }
        if "clip_embeddings" in parts:
            recall = video_retrieval_recall(
                parts["clip_embeddings"], parts["clip_ids"],
                parts["clip_text_embeddings"], parts["text_clip_ids"], self.ks,
            )  # fmt: skip
            metrics |= {f"video_retrieval/{name}": value for name, value in recall.items()}
        if "labels" not in parts:
            return metrics
        metrics |= _linear_probes(parts, attributes)
        if "image_embeddings" not in parts:
            return metrics
        similarity = parts["image_embeddings"] @ parts["text_embeddings"].T
        metrics |= {
            f"retrieval/{name}": value
            for name, value in retrieval_recall(
                similarity, parts["image_ids"], parts["text_image_ids"], self.ks
            ).items()
        }
        if self.rerank_k > 0 and similarity.numel() > 0:  # the same on every rank
            metrics.update(self._reranked(similarity, parts, tokens))
        for kind in ("itc", "itm"):
            outcomes = parts.get(f"compositional_{kind}")
            if outcomes is not None and outcomes.numel() > 0:
                metrics[f"compositional/{kind}_acc"] = outcomes.mean().item()
        if (parts["labels"] >= 0).any():
            metrics |= self._zeroshot(
                parts["image_embeddings"], parts["labels"], class_names, prompt_templates
            )
        return metrics

    def _zeroshot(
        self,
        images: Tensor,
        labels: Tensor,
        class_names: list[str] | None,
        templates: list[str] | None,
    ) -> dict[str, float]:
        """Accuracy of the learned prompts when an objective has them, else of the templates;
        with learned prompts the templates' accuracy is ``acc_hand``, for comparison."""
        hand = None
        if class_names and templates:
            hand = zeroshot_accuracy(images, self._class_embeddings(class_names, templates), labels)
        prompted = self.prompt_classifier
        if prompted is None:
            return {} if hand is None else {"zeroshot/acc": hand}
        if class_names and list(class_names) != list(prompted.class_names):
            raise ValueError(
                f"the data's classes {class_names} differ from the learned prompts' "
                f"{prompted.class_names}"
            )
        with torch.no_grad():
            classes = prompted.class_embeddings(self._model.encoders.text, self.embedder.embed_text)
        metrics = {"zeroshot/acc": zeroshot_accuracy(images, classes, labels)}
        return metrics if hand is None else {**metrics, "zeroshot/acc_hand": hand}

    def _reranked(
        self, similarity: Tensor, parts: dict[str, Tensor], tokens: TokenStore
    ) -> dict[str, float]:
        images, texts = tokens.gathered(self._model.device)
        fusion = self._model.encoders.fusion
        scorer = fusion_scorer(fusion, self.matcher.match_logit, images, texts)
        recall = itm_reranked_recall(
            similarity, parts["image_ids"], parts["text_image_ids"], self.rerank_k, scorer, self.ks
        )
        return {f"retrieval_itm/{name}": value for name, value in recall.items()}

    def _class_embeddings(self, class_names: list[str], templates: list[str]) -> Tensor:
        text_encoder = self._model.encoders.text
        tokens = {
            k: v.to(self._model.device)
            for k, v in text_encoder.tokenize(class_prompts(class_names, templates)).items()
        }
        with torch.no_grad():
            prompts = self.embedder.embed_text(text_encoder(**tokens))
        return class_embeddings(prompts, len(class_names))


def _linear_probes(
    parts: dict[str, Tensor], attributes: dict[int, dict[str, int]]
) -> dict[str, float]:
    """``linear_probe/acc`` of the labels and ``linear_probe/{name}_acc`` of each attribute,
    on the same frozen features; a target needs two labelled images."""
    ids = parts["image_ids"]
    targets = {"acc": parts["labels"]}
    for name in sorted({name for values in attributes.values() for name in values}):
        targets[f"{name}_acc"] = torch.tensor(
            [attributes.get(i, {}).get(name, -1) for i in ids.tolist()], device=ids.device
        )
    return {
        f"linear_probe/{metric}": linear_probe_accuracy(parts["probe_features"], labels, ids)
        for metric, labels in targets.items()
        if int((labels >= 0).sum()) >= 2
    }
