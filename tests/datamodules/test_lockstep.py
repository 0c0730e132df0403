"""A streamed training loader resumed part-way through an epoch yields the rest of that
epoch's batches, in the order the uninterrupted pass had them, whatever the workers; the
batches and samples it drops are counted per epoch, and their bad samples reported."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils.data import IterableDataset

from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer, tiny_data
from vlp.datamodules import lockstep
from vlp.datamodules.formats.shards import WebDatasetShards
from vlp.datamodules.formats.writers import open_written, write_records
from vlp.datamodules.lockstep import LockstepLoader
from vlp.datamodules.records import ImageTextRecord, SkippedRecord
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive

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


def loader(
    dataset: IterableDataset, workers: int, epoch: int = EPOCH, batch_size: int = 2
) -> LockstepLoader:
    return LockstepLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=image_ids,
        device=torch.device("cpu"),
        epoch=lambda: epoch,
    )


@pytest.mark.parametrize(
    ("workers", "steps", "batch_size"),
    [(0, 3, 2), (2, 3, 2), (2, 4, 2), (3, 5, 2), (2, 2, 3)],  # batches of 3: shares end short
    ids=lambda v: str(v),
)
def test_resumed_pass_continues_where_the_checkpoint_left_the_stream(
    shards: str, workers: int, steps: int, batch_size: int
) -> None:
    stream = WebDatasetShards(shards, shuffle_shards=True, seed=2)
    uninterrupted = list(loader(stream, workers, batch_size=batch_size))
    assert len(uninterrupted) > steps

    resumed = loader(stream, workers, batch_size=batch_size)
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


@pytest.mark.parametrize(("workers", "dropped"), [(0, [12, 13]), (2, [10, 11])])
def test_a_workers_short_last_batch_is_dropped_and_its_samples_counted(
    shards: str, workers: int, dropped: list[int]
) -> None:
    """In batches of 3, one process reads all 14 images (4 batches and 2 left over); with 2
    workers, worker 0 reads shards 0 and 2 (8 images: 2 batches, and images 10 and 11 left
    over), worker 1 shards 1 and 3 (6 images: 2 batches)."""
    scenes = SyntheticScenes("train", num_images=14, image_size=16, captions_per_image=1)
    streamed = loader(WebDatasetShards(shards), workers, batch_size=3)
    batches = list(streamed)
    assert [len(batch) for batch in batches] == [3] * 4
    left_over = {scenes[i].image_id for i in range(14)} - {i for b in batches for i in b}
    assert left_over == {scenes[i].image_id for i in dropped}
    assert streamed.dropped_tail_samples == 2


def test_a_stream_without_one_full_batch_per_pass_is_an_error(shards: str) -> None:
    """2 workers read 8 and 6 images: neither makes a batch of 9."""
    with pytest.raises(ValueError, match=r"no full batch of 9.*14 samples"):
        list(loader(WebDatasetShards(shards), workers=2, batch_size=9))


class Items(IterableDataset):
    """0, 1, 2, 3, 4, a corrupt item, 6, a missing item, a too large item."""

    def __iter__(self) -> Iterator[int | SkippedRecord]:
        bad = {5: "corrupt", 7: "missing", 8: "too_large"}
        return iter(SkippedRecord(bad[i], str(i)) if i in bad else i for i in range(9))


def counting_collate(items: list[int | SkippedRecord]) -> dict:
    skipped = Counter(item.reason for item in items if isinstance(item, SkippedRecord))
    return {"items": [i for i in items if isinstance(i, int)], "skipped": skipped}


class OtherRankRunsOut:
    """``any_rank`` as if another rank had ``batches`` batches per pass (``calls`` is reset
    before each pass)."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.calls = 0

    def __call__(self, flag: bool, device: torch.device) -> bool:
        self.calls += 1
        return flag or self.calls > self.batches


def test_dropped_batches_count_per_epoch_and_report_their_bad_samples(monkeypatch) -> None:
    """Batches of 2: [0, 1], [2, 3], [4, corrupt], [6, missing] and a short [too large]; the
    other rank's 2 batches end the pass, so the last two full batches and the short one
    are dropped. A mixture restarts a shorter stream within an epoch: its counts add up."""
    other_rank = OtherRankRunsOut(batches=2)
    monkeypatch.setattr(lockstep, "any_rank", other_rank)
    epoch = [0]
    streamed = LockstepLoader(Items(), batch_size=2, collate_fn=counting_collate,
                              device=torch.device("cpu"), epoch=lambda: epoch[0])  # fmt: skip
    for passes in (1, 2):
        other_rank.calls = 0
        batches = list(streamed)
        assert [b["items"] for b in batches] == [[0, 1], [2, 3]]
        assert sum((b["skipped"] for b in batches), Counter()) == {
            "corrupt": 1, "missing": 1, "too_large": 1
        }  # fmt: skip
        assert (streamed.dropped_batches, streamed.dropped_tail_samples) == (2 * passes, passes)
    epoch[0] = 1
    other_rank.calls = 0
    list(streamed)
    assert (streamed.dropped_batches, streamed.dropped_tail_samples) == (2, 1)


def test_fit_logs_the_samples_of_short_batches_each_epoch(tmp_path: Path) -> None:
    """5 images in batches of 2: 2 steps per epoch, and 1 image left over in each."""
    scenes = SyntheticScenes("train", num_images=5, image_size=32, captions_per_image=1)
    shards = write_records((scenes[i] for i in range(5)), tmp_path, "webdataset", 5)
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [Contrastive(embed_dim=8)],
    )
    data = tiny_data(open_written(shards, "webdataset"), model.tokenize)
    data.batch_size = 2
    trainer = quiet_trainer(max_epochs=2, max_steps=4)  # a stream's length is unknown
    trainer.fit(model, data)
    assert trainer.global_step == 4
    assert trainer.callback_metrics["data/dropped_tail_samples"] == 1
    assert trainer.callback_metrics["data/dropped_batches"] == 0
