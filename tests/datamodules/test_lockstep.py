"""A streamed training loader resumed part-way through an epoch yields the rest of that
epoch's batches, in the order the uninterrupted pass had them, whatever the workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import IterableDataset

from vlp.datamodules.formats.shards import WebDatasetShards
from vlp.datamodules.formats.writers import write_records
from vlp.datamodules.lockstep import LockstepLoader
from vlp.datamodules.records import ImageTextRecord
from vlp.datamodules.synthetic import SyntheticScenes

EPOCH = 1


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """14 images in shards of 4, 4, 4 and 2: with 2 workers, worker 0 makes 4 batches of 2
    and worker 1 makes 3, so the workers' batches interleave unevenly."""
    scenes = SyntheticScenes("train", num_images=14, image_size=16, captions_per_image=1)
    out = tmp_path_factory.mktemp("shards")
    return str(write_records((scenes[i] for i in range(14)), out, "webdataset", 4))


def image_ids(records: list[ImageTextRecord]) -> list[int]:
    return [record.image_id for record in records]


def loader(dataset: IterableDataset, workers: int, epoch: int = EPOCH) -> LockstepLoader:
    return LockstepLoader(
        dataset,
        batch_size=2,
        drop_last=True,
        num_workers=workers,
        collate_fn=image_ids,
        device=torch.device("cpu"),
        epoch=lambda: epoch,
    )


@pytest.mark.parametrize(
    ("workers", "steps"), [(0, 3), (2, 3), (2, 4), (3, 5)], ids=lambda v: str(v)
)
def test_resumed_pass_continues_where_the_checkpoint_left_the_stream(
    shards: str, workers: int, steps: int
) -> None:
    stream = WebDatasetShards(shards, shuffle_shards=True, seed=2)
    uninterrupted = list(loader(stream, workers))
    assert len(uninterrupted) > steps

    resumed = loader(stream, workers)
    resumed.resume_after(EPOCH, steps)
    assert list(resumed) == uninterrupted[steps:]
    assert list(resumed) == uninterrupted  # the epoch's next pass starts at its beginning
    assert stream.starts == ()


def test_resumed_pass_takes_the_checkpoint_epoch_not_the_trainer_one(shards: str) -> None:
    """A resumed fit loop makes its first iterator before it restores the epoch counter."""
    stream = WebDatasetShards(shards, shuffle_shards=True, seed=2)
    in_epoch = {epoch: list(loader(stream, 0, epoch)) for epoch in (0, EPOCH)}
    assert in_epoch[0] != in_epoch[EPOCH]
    resumed = loader(stream, 0, epoch=0)
    resumed.resume_after(EPOCH, 2)
    assert list(resumed) == in_epoch[EPOCH][2:]
    assert list(resumed) == in_epoch[0]


class Unskippable(IterableDataset):
    def __iter__(self):
        return iter(range(6))


def test_a_stream_that_cannot_start_part_way_warns_and_reads_again() -> None:
    resumed = LockstepLoader(
        Unskippable(), batch_size=2, device=torch.device("cpu"), epoch=lambda: EPOCH
    )
    resumed.resume_after(EPOCH, 1)
    with pytest.warns(UserWarning, match="reads again the 1 batches"):
        assert len(list(resumed)) == 3
