"""One step's batch with lazily computed, memoised encodings (DESIGN.md "The one idea")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import Tensor

from vlp.distributed import gather_no_grad, gather_with_grad
from vlp.encoders import Encoders
from vlp.encoding import Encoding
from vlp.teachers import EMATeacher, TeacherSpec

T = TypeVar("T")


class Step:
    """What objectives see: the batch plus shared encodings, each computed at most once.

    Two objectives asking for ``step.image()`` get the same tensors, so the
    vision tower runs once per step however many objectives are configured.
    """

    gather = staticmethod(gather_with_grad)
    gather_no_grad = staticmethod(gather_no_grad)

    def __init__(
        self, batch: Mapping[str, Any], encoders: Encoders, teachers: Mapping[str, EMATeacher]
    ) -> None:
        self.batch = batch
        self.encoders = encoders
        self._teachers = teachers
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

    def text(self) -> Encoding:
        return self.cached(
            "text", lambda: self.encoders.text(self.field("text_ids"), self.field("text_mask"))
        )

    def fused(self) -> Encoding:
        """The fusion encoder on the batch's matching (image, text) pairs."""
        if self.encoders.fusion is None:
            raise ValueError(
                "an objective needs the fusion encoder: set model.fusion in the config"
            )
        return self.cached("fused", lambda: self.encoders.fusion(self.text(), self.image()))

    def teacher(self, spec: TeacherSpec) -> EMATeacher:
        return self._teachers[spec.key]

    @property
    def image_ids(self) -> Tensor:
        return self.field("image_ids")
