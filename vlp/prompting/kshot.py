"""k-shot training subsets, drawn reproducibly (CoOp's 1/2/4/8/16-shot protocol).

One seed fixes the subset: the same seed and split always give the same examples, so a
few-shot result can be rerun exactly and compared across methods on identical shots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset


def kshot_indices(
    num_examples: int, k: int, seed: int, labels: Sequence[int] | None = None
) -> list[int]:
    """Sorted indices of k examples per label (stratified) or, without labels, of k examples.

    Negative labels mark unlabelled examples (as in zero-shot evaluation); they are never
    drawn when labels are given. A label with fewer than k examples is an error.
    """
    if labels is not None and len(labels) != num_examples:
        raise ValueError(f"{len(labels)} labels for {num_examples} examples")
    pools: dict[int, list[int]] = defaultdict(list)
    for index in range(num_examples):
        label = -1 if labels is None else int(labels[index])
        if labels is None or label >= 0:
            pools[label].append(index)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    for label in sorted(pools):
        pool = pools[label]
        if len(pool) < k:
            raise ValueError(f"label {label} has {len(pool)} examples, fewer than k={k}")
        chosen += [pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist()]
    return sorted(chosen)


def kshot_subset(
    dataset: Dataset, k: int, seed: int, labels: Sequence[int] | None = None
) -> Subset:
    """The k-shot subset of ``dataset`` (``labels`` aligned with its indices)."""
    return Subset(dataset, kshot_indices(len(dataset), k, seed, labels))
