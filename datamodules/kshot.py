"""Few-shot training sets: k labelled images per class of a training source (CoOp's protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset, IterableDataset, Subset

from vlp.datamodules.records import NO_LABEL
from vlp.prompting.kshot import kshot_subset


@dataclass(frozen=True)
class KShot:
    """Train on ``k`` images per class drawn with ``seed`` (CoOp reports seeds 1, 2, 3).

    The same source, k and seed always give the same images, whatever the run's seed.
    """

    k: int
    seed: int = 1

    def subset(self, source: Dataset) -> Subset:
        if isinstance(source, IterableDataset):
            raise ValueError("data.kshot draws from a map-style training source, not a stream")
        return kshot_subset(source, self.k, self.seed, record_labels(source))


def record_labels(source: Dataset) -> list[int]:
    """Each record's label (``NO_LABEL`` for an unreadable one, which is never drawn).

    Indexed formats keep their parsed rows in ``samples``: read the labels there
    rather than decode every image.
    """
    items = getattr(source, "samples", None)
    if items is None:
        items = (source[i] for i in range(len(source)))
    return [getattr(item, "label", NO_LABEL) for item in items]
