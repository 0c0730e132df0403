"""The momentum feature queue: ring order, wrap-around, any batch size, ids kept in sync."""

from __future__ import annotations

import torch

from vlp.queues import FeatureQueue


def test_starts_empty_and_fills_in_order() -> None:
    queue = FeatureQueue(dim=2, size=5)
    assert queue.contents()[0].shape == (0, 2)
    queue.enqueue(torch.arange(6.0).view(3, 2), torch.tensor([10, 11, 12]))
    features, ids = queue.contents()
    assert ids.tolist() == [10, 11, 12] and torch.equal(features, torch.arange(6.0).view(3, 2))


def test_wraps_around_for_batches_that_do_not_divide_the_size() -> None:
    queue = FeatureQueue(dim=1, size=5)
    for start in range(0, 12, 3):  # four batches of 3 into 5 slots
        queue.enqueue(torch.arange(start, start + 3.0)[:, None], torch.arange(start, start + 3))
    # written in order 0..11; slot i holds the latest value ≡ i (mod 5)
    assert queue.image_ids.tolist() == [10, 11, 7, 8, 9]
    assert int(queue.pointer) == 12 % 5


def test_a_batch_larger_than_the_queue_keeps_the_newest_rows() -> None:
    queue = FeatureQueue(dim=1, size=3)
    queue.enqueue(torch.arange(7.0)[:, None], torch.arange(7))
    assert sorted(queue.contents()[1].tolist()) == [4, 5, 6]


def test_contents_are_a_copy() -> None:
    queue = FeatureQueue(dim=1, size=2)
    queue.enqueue(torch.ones(2, 1), torch.tensor([1, 2]))
    features, _ = queue.contents()
    queue.enqueue(torch.zeros(2, 1), torch.tensor([3, 4]))
    assert features.sum() == 2
