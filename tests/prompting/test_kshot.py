from collections import Counter

import pytest

from vlp.prompting.kshot import kshot_indices, kshot_subset

LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, -1, -1, 0, 1]  # -1: unlabelled


def test_same_seed_same_subset_and_another_seed_another():
    first = kshot_indices(len(LABELS), 2, seed=3, labels=LABELS)
    assert first == kshot_indices(len(LABELS), 2, seed=3, labels=LABELS)
    others = {tuple(kshot_indices(len(LABELS), 2, seed=s, labels=LABELS)) for s in range(10)}
    assert len(others) > 1


def test_k_per_label_and_never_an_unlabelled_example():
    chosen = kshot_indices(len(LABELS), 3, seed=0, labels=LABELS)
    assert Counter(LABELS[i] for i in chosen) == {0: 3, 1: 3, 2: 3}
    assert chosen == sorted(set(chosen))


def test_without_labels_k_examples_of_the_whole_split():
    chosen = kshot_indices(10, 4, seed=0)
    assert len(set(chosen)) == 4 and all(0 <= i < 10 for i in chosen)
    assert kshot_indices(10, 10, seed=5) == list(range(10))


def test_a_label_with_fewer_than_k_examples_is_an_error():
    with pytest.raises(ValueError, match="label 2 has 4"):
        kshot_indices(len(LABELS), 5, seed=0, labels=LABELS)
    with pytest.raises(ValueError, match="3 labels for 4"):
        kshot_indices(4, 1, seed=0, labels=[0, 1, 2])


def test_subset_holds_the_drawn_examples():
    data = [f"example {i}" for i in range(len(LABELS))]
    subset = kshot_subset(data, 1, seed=7, labels=LABELS)
    chosen = kshot_indices(len(LABELS), 1, seed=7, labels=LABELS)
    assert [subset[i] for i in range(len(subset))] == [data[i] for i in chosen]
