"""One step's batch with lazily computed, memoised encodings (DESIGN.md "The one idea")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from torch import Tensor

from vlp.distributed import gather_no_grad, gather_with_grad, rank_rows, world
from vlp.encoders import Encoders
from vlp.encoding import Encoding
from vlp.teachers import EMATeacher, TeacherSpec

if TYPE_CHECKING:
    from vlp.evaluation.evaluator import Embedder
    from vlp.gradient_cache import ChunkedEncoders

T = TypeVar("T")


class Step:
    """What objectives see: the batch plus shared encodings, each computed at most once.

    Two objectives asking for ``step.image()`` get the same tensors, so the
    vision tower runs once per step however many objectives are configured.
    """

    def __init__(
        self,
        batch: Mapping[str, Any],
        encoders: Encoders | ChunkedEncoders,
        teachers: Mapping[str, EMATeacher],
        embedder: Embedder | None = None,
        global_step: int = 0,
    ) -> None:
        self.batch = batch
        self.encoders = encoders
        self._teachers = teachers
        self._embedder = embedder
        self.global_step = global_step  # optimizer steps so far, for warm-ups (e.g. ALBEF's α)
        self._cache: dict[Any, Any] = {}

    def cached(self, key: Any, compute: Callable[[], T]) -> T:
        """Memoise ``compute()`` under ``key`` for the rest of this step."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def field(self, name: str) -> Any:
        """A batch field, with an error naming what is missing."""
        if name not in self.batch:
            raise KeyError(f"batch has no {name!r}; it has {sorted(self.batch)}")
        return self.batch[name]

    def image(self, field: str = "images") -> Encoding:
        return self.cached(("image", field), lambda: self.encoders.vision(self.field(field)))

    def media(self) -> Tensor:
        """Patch tokens of the batch's media, [B, T_media, F_frames, N, D], for Flamingo.

        Documents and clips carry ``media`` [B, T, F, C, H, W]; image–text pairs have
        none, and each image is its row's one single-frame medium, read from
        :meth:`image` so that objectives on the same pairs share one vision pass.
        """
        if "media" not in self.batch:
            return self.image().tokens[:, None, None]

        def encode() -> Tensor:
            media = self.field("media")
            return self.encoders.vision(media.flatten(0, 2)).tokens.unflatten(0, media.shape[:3])

        return self.cached("media", encode)

    def text(self) -> Encoding:
        return self.cached(
            "text", lambda: self.encoders.text(self.field("text_ids"), self.field("text_mask"))
        )

    def masked_image(self) -> Encoding:
        """The online vision encoder on the images with the ``image_mask`` patches masked."""
        return self.cached(
            "masked_image",
            lambda: self.encoders.vision(self.field("images"), self.field("image_mask")),
        )

    def masked_text(self) -> Encoding:
        """The online text encoder on ``masked_text_ids``, the captions as a mask recipe left them."""
        return self.cached(
            "masked_text",
            lambda: self.encoders.text(self.field("masked_text_ids"), self.field("text_mask")),
        )

    def masked_fused(self) -> Encoding:
        """The fusion encoder on the masked captions attending to the masked images."""
        fusion = self._fusion()
        return self.cached("masked_fused", lambda: fusion(self.masked_text(), self.masked_image()))

    def fuse(self, text: Encoding, image: Encoding) -> Encoding:
        """The fusion encoder on any (text, image) rows, e.g. ITM negatives or masked text."""
        return self._fusion()(text, image)

    def fused(self) -> Encoding:
        """The fusion encoder on the batch's matching (image, text) pairs."""
        fusion = self._fusion()
        return self.cached("fused", lambda: fusion(self.text(), self.image()))

    def _fusion(self):
        if self.encoders.fusion is None:
            raise ValueError(
                "an objective needs the fusion encoder: set model.fusion in the config"
            )
        return self.encoders.fusion

    def embedded(self, objective: Embedder) -> tuple[Tensor, Tensor]:
        """``objective``'s normalised (image, text) embeddings of this batch, computed once."""
        return self.cached(
            ("embedded", id(objective)),
            lambda: (objective.embed_image(self.image()), objective.embed_text(self.text())),
        )

    @property
    def embedder(self) -> Embedder:
        """The objective whose image–text space the model shares (the first contrastive one)."""
        if self._embedder is None:
            raise ValueError("no objective defines an image–text embedding (add e.g. ITC)")
        return self._embedder

    def similarity(self) -> Tensor:
        """Local image × text cosine similarity in the model's shared embedding space.

        The space is the first contrastive objective's, so ITM's hard negatives
        follow the contrastive scores whatever the order of the objectives.
        """
        image, text = self.embedded(self.embedder)
        return image @ text.T

    def teacher(self, spec: TeacherSpec) -> EMATeacher:
        return self._teachers[spec.key]

    def teacher_image(self, spec: TeacherSpec, field: str = "images") -> Encoding:
        """The EMA vision teacher's encoding of an image field, computed once."""
        return self.cached(
            ("teacher_image", spec.key, field), lambda: self.teacher(spec)(self.field(field))
        )

    def teacher_text(self, spec: TeacherSpec) -> Encoding:
        """The EMA text teacher's encoding of the batch's captions, computed once."""
        return self.cached(
            ("teacher_text", spec.key),
            lambda: self.teacher(spec)(self.field("text_ids"), self.field("text_mask")),
        )

    @property
    def image_ids(self) -> Tensor:
        return self.field("image_ids")

    def gather(self, rows: Tensor) -> tuple[Tensor, int]:
        """Every rank's ``rows`` (one per batch row), with gradients, and where this rank's
        start: :func:`~vlp.distributed.gather_with_grad`."""
        return gather_with_grad(rows, self._rank_rows(rows))

    def gather_no_grad(self, rows: Tensor) -> Tensor:
        """Every rank's ``rows`` (one per batch row), without gradients."""
        return gather_no_grad(rows, self._rank_rows(rows))

    def rank_offset(self) -> int:
        """Where this rank's batch rows start among every rank's."""
        rank, _ = world()
        return sum(self._rank_rows(self.image_ids)[:rank])

    def _rank_rows(self, rows: Tensor) -> list[int]:
        """Every rank's batch size, synced once per step for all the step's gathers (each
        sync is a collective and a host–device round trip)."""
        batch_rows = self.image_ids.shape[0]
        if rows.shape[0] != batch_rows:
            raise ValueError(
                f"step gathers take one row per batch row ({batch_rows}), got {rows.shape[0]}"
            )
        return self.cached("rank_rows", lambda: rank_rows(batch_rows, self.image_ids.device))
