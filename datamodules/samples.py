"""From records to model-ready samples, for map-style and streaming sources."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from vlp.datamodules.formats.split import WorkerStart
from vlp.datamodules.records import ImageTextRecord, SkippedRecord
from vlp.seeding import mix, seeded_cpu


@dataclass
class Sample:
    """One transformed image with the captions a batch will carry for it.

    ``hard_negatives[c]`` are false captions close to ``captions[c]`` (attributes
    or relation swapped), kept only in evaluation and only when the source has
    them for every caption; otherwise empty.
    """

    image: Tensor
    captions: list[str]
    image_id: int
    label: int
    dropped_captions: Counter
    hard_negatives: list[list[str]] = field(default_factory=list)
    extra_views: dict[str, Tensor] = field(default_factory=dict)  # e.g. TCL's "images_aug"
    questions: list[dict[str, str]] = field(default_factory=list)  # VQA pairs (P-tuning, eval)
    attributes: dict[str, int] = field(default_factory=dict)  # more linear-probe targets
    key: int = 0  # this visit's random key: its masks follow from it too (``vlp.seeding``)


class Visit(int):
    """A training index that also carries the random key of this visit of the item
    (data seed, epoch, pass, index): a dataset without random draws reads it as the index."""

    key: int

    def __new__(cls, index: int, key: int) -> Visit:
        visit = super().__new__(cls, index)
        visit.key = key
        return visit

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        return Visit, (int(self), self.key)


@dataclass(frozen=True)
class Views:
    """The transform of the main image, and of any extra views objectives asked for."""

    main: Callable
    extra: dict[str, Callable] = field(default_factory=dict)


def to_sample(
    record: ImageTextRecord | SkippedRecord, views: Views, all_captions: bool, key: int
) -> Sample | SkippedRecord:
    """Training draws one caption per image per visit (ALBEF); evaluation keeps them all,
    with their hard negatives. The draws (caption, crops, colours) follow from ``key``."""
    if isinstance(record, SkippedRecord):
        return record
    captions = list(record.captions)
    with seeded_cpu(key):
        if not all_captions:
            captions = [captions[int(torch.randint(len(captions), ()))]]
        image = views.main(record.image)
        extra_views = {name: view(record.image) for name, view in views.extra.items()}
    return Sample(
        image=image,
        extra_views=extra_views,
        key=key,
        captions=captions,
        image_id=record.image_id,
        label=record.label,
        dropped_captions=Counter(record.meta.get("dropped_captions", {})),
        hard_negatives=hard_negative_texts(record.meta, len(captions)) if all_captions else [],
        questions=question_pairs(record.meta),
        attributes=probe_attributes(record.meta),
    )


# A question and its answer as text (OpenFlamingo's VQA layout): what VQA prompts end
# with, and what documents that teach the format contain.
QUESTION_ANSWER = "Question:{question} Short answer:{answer}"


def question_pairs(meta: dict[str, Any]) -> list[dict[str, str]]:
    """``meta["questions"]``: the ``{"question", "answer"}`` pairs whose fields are both text."""
    pairs = meta.get("questions")
    if not isinstance(pairs, list):
        return []
    return [
        {"question": p["question"], "answer": p["answer"]}
        for p in pairs
        if isinstance(p, dict)
        and isinstance(p.get("question"), str)
        and isinstance(p.get("answer"), str)
    ]


def probe_attributes(meta: dict[str, Any]) -> dict[str, int]:
    """``meta["attributes"]``: named class indices beside the label (the embedded scenes':
    ``colour``, ``count``), each a linear-probe target; entries that are not
    non-negative integers are left out."""
    attributes = meta.get("attributes")
    if not isinstance(attributes, dict):
        return {}
    return {
        str(name): value
        for name, value in attributes.items()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
    }


def hard_negative_texts(meta: dict[str, Any], num_captions: int) -> list[list[str]]:
    """``meta["hard_negatives"]`` as texts per caption; empty unless it lines up with the captions.

    A record whose bad captions were dropped no longer lines up, so it gets none
    rather than negatives attached to the wrong caption.
    """
    negatives = meta.get("hard_negatives")
    if (
        not isinstance(negatives, list)
        or len(negatives) != num_captions
        or meta.get("dropped_captions")
    ):
        return []
    texts = []
    for per_caption in negatives:
        if not isinstance(per_caption, list):
            return []
        texts.append([n.get("text") if isinstance(n, dict) else n for n in per_caption])
    if not all(isinstance(t, str) and t for per_caption in texts for t in per_caption):
        return []
    return texts


@dataclass(frozen=True)
class NoItem:
    """What an evaluation rank with no item of the split loads (its sampler yields ``None``).

    Collation drops it, so that rank runs one empty batch: it then reaches the
    epoch end and joins the metric gathers instead of leaving the others waiting.
    """


class MappedSamples(Dataset):
    """A map-style source seen through :func:`to_sample`."""

    def __init__(self, source: Dataset, views: Views, all_captions: bool) -> None:
        self.source = source
        self.views = views
        self.all_captions = all_captions

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int | Visit | None) -> Sample | SkippedRecord | NoItem:
        if index is None:
            return NoItem()
        key = index.key if isinstance(index, Visit) else mix(index)
        return to_sample(self.source[index], self.views, self.all_captions, key)


class StreamView(IterableDataset):
    """A view of a streaming source that hands the training loader's epoch and resume
    position (:mod:`vlp.datamodules.lockstep`) on to the source."""

    def __init__(self, source: IterableDataset) -> None:
        self.source = source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    @property
    def can_start_part_way(self) -> bool:
        """Whether the source's passes can start part-way in (``start_next_pass``)."""
        return getattr(self.source, "can_start_part_way", False)

    def start_next_pass(self, starts: tuple[WorkerStart, ...]) -> None:
        self.source.start_next_pass(starts)


class StreamedSamples(StreamView):
    """A streaming source (it splits itself by rank and worker) seen through :func:`to_sample`.

    A record's random key is (seed, epoch, image id): a stream visits each once per epoch.
    """

    def __init__(
        self, source: IterableDataset, views: Views, all_captions: bool, seed: int = 0
    ) -> None:
        super().__init__(source)
        self.views = views
        self.all_captions = all_captions
        self.seed = seed

    def __iter__(self) -> Iterator[Sample | SkippedRecord]:
        for record in self.source:
            key = mix(self.seed, self.epoch, getattr(record, "image_id", 0))
            yield to_sample(record, self.views, self.all_captions, key)


def as_samples(source: Dataset, views: Views, all_captions: bool, seed: int) -> Dataset:
    """``source``'s samples; ``seed`` keys a stream's draws (a map-style source's visits
    come keyed from the sampler)."""
    if isinstance(source, IterableDataset):
        return StreamedSamples(source, views, all_captions, seed)
    return MappedSamples(source, views, all_captions)
