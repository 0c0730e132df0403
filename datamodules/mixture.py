"""A weighted mixture of training datasets, one batch of each per optimizer step.

Flamingo (§3 and its ablation; ``shared/specs/flamingo.md`` §4.4–4.5) minimises
Σ_d λ_d · L_d and, at every step, accumulates the gradient of one batch from *every*
dataset before updating; a round-robin over datasets was much worse. Here the data
module zips one loader per dataset (Lightning's ``CombinedLoader``, "max_size_cycle":
shorter datasets restart until the longest is done), and the module sums
λ_d · loss_d of each step's batches before a single backward, so the gradient is
Σ_d λ_d ∇L_d and DDP reduces it once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch.utils.data import Dataset


class DatasetTag(NamedTuple):
    """Carried in each batch of a mixture: which dataset, its λ, which objectives train on it."""

    name: str
    weight: float  # λ_d
    objectives: tuple[str, ...] | None  # objective names (logging prefixes); None: all


class MixturePart:
    """One dataset of a mixture.

    Args:
        name: its name in logs (``train/<name>/...``) and in the batch.
        source: any training source (image–text records, or media–text documents/clips).
        weight: λ, its loss weight (Flamingo: 1.0 for M3W, 0.2 for image–text pairs,
            0.03 for video).
        objectives: names of the objectives that train on it (e.g. only ``flamingo`` on
            interleaved documents, which have no single caption for ITC); all if unset.
        batch_size: its batch size per rank; the data module's when unset.
    """

    def __init__(
        self,
        name: str,
        source: Dataset,
        weight: float = 1.0,
        objectives: list[str] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.tag = DatasetTag(name, weight, None if objectives is None else tuple(objectives))


def mixture_parts(batch: Mapping[str, Any]) -> list[tuple[DatasetTag | None, Mapping[str, Any]]]:
    """A step's batches with their tags: a mixture's per-dataset batches, or the one plain batch."""
    tagged = [part for part in batch.values() if isinstance(part, Mapping) and "dataset" in part]
    if not tagged:
        return [(None, batch)]
    return [(part["dataset"], part) for part in tagged]


def batch_rows(batch: Mapping[str, Any]) -> int:
    """Samples in one dataset's batch: its images, or its documents or clips."""
    return len(batch["images"] if "images" in batch else batch["media"])


def step_rows(batch: Mapping[str, Any]) -> int:
    """Samples in a step's batch, summed over a mixture's datasets."""
    return sum(batch_rows(part) for _, part in mixture_parts(batch))


@dataclass(frozen=True)
class TaggedCollate:
    """A dataset's own collate, with its tag added to every batch."""

    collate: Callable[[list[Any]], dict[str, Any]]
    tag: DatasetTag

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        return {**self.collate(items), "dataset": self.tag}
