"""WebDataset shards: every sample read exactly once across ranks and workers."""

from __future__ import annotations

import io
import tarfile
from collections import Counter

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from vlp.datamodules.formats.shards import WebDatasetShards
from vlp.datamodules.formats.split import Consumer, assigned_to, current_consumer
from vlp.datamodules.formats.writers import write_records
from vlp.datamodules.records import BadSampleError, ImageTextRecord, SkippedRecord


@pytest.fixture
def ten(make_records):
    return make_records(10)


@pytest.fixture
def shards(ten, tmp_path):
    """10 samples in 5 shards of 2."""
    return str(write_records(ten, tmp_path, "webdataset", shard_size=2))


def consumers(world_size: int, num_workers: int) -> list[Consumer]:
    return [
        current_consumer(rank, world_size, worker, num_workers)
        for rank in range(world_size)
        for worker in range(num_workers)
    ]


@pytest.mark.parametrize(
    ("world_size", "num_workers"),
    [
        (1, 1),
        (2, 1),
        (1, 3),
        (2, 2),
        (5, 1),
        (3, 2),
        (4, 4),
    ],  # last two: more consumers than shards
)
def test_consumers_together_read_everything_once(ten, shards, world_size, num_workers):
    source = WebDatasetShards(shards)
    seen = Counter(
        r.image_id for c in consumers(world_size, num_workers) for r in source.iter_as(c)
    )
    assert seen == Counter(r.image_id for r in ten)


def test_shard_split_deals_whole_shards():
    owners = [[j for j in range(7) if assigned_to(j, Consumer(i, 3))] for i in range(3)]
    assert owners == [[0, 3, 6], [1, 4], [2, 5]]


def test_consumer_comes_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert current_consumer() == Consumer(1, 3)
    assert current_consumer(worker=1, num_workers=2) == Consumer(3, 6)


@pytest.mark.parametrize("shard_size", [2, 10])  # 5 shards (split by shard), 1 shard (by sample)
def test_real_dataloader_workers_split_the_stream(ten, tmp_path, shard_size):
    pattern = write_records(ten, tmp_path, "webdataset", shard_size=shard_size)
    loader = DataLoader(WebDatasetShards(str(pattern)), batch_size=None, num_workers=2)
    assert sorted(r.image_id for r in loader) == sorted(r.image_id for r in ten)


def test_set_epoch_reshuffles_shards_deterministically(ten, shards):
    source = WebDatasetShards(shards, shuffle_shards=True, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        source.set_epoch(epoch)
        orders.append(source.shard_order())
    assert orders[0] == orders[2] != orders[1]
    assert sorted(orders[1]) == source.urls
    assert sorted(r.image_id for r in source) == sorted(r.image_id for r in ten)


def add_member(path, name: str, data: bytes) -> None:
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_bad_member_and_bad_shards_are_counted_skips(make_records, tmp_path):
    pattern = write_records(make_records(2), tmp_path, "webdataset")
    shard = tmp_path / "shard-000000.tar"
    add_member(shard, "zzz.png", b"not a png")
    add_member(shard, "zzz.txt", b"caption")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[:1500])
    urls = [str(pattern), str(truncated), str(tmp_path / "absent.tar")]

    items = list(WebDatasetShards(urls))
    assert [type(i) for i in items[:2]] == [ImageTextRecord, ImageTextRecord]
    assert items[2] == SkippedRecord("corrupt", f"{shard}:zzz")
    assert SkippedRecord("corrupt", str(truncated)) in items
    assert items[-1] == SkippedRecord("missing", str(tmp_path / "absent.tar"))

    with pytest.raises(BadSampleError, match="zzz"):
        list(WebDatasetShards(urls, on_error="raise"))


def cut_at(shard, member: str, where: str) -> int:
    """A byte offset in ``shard``: the start of ``member``'s header, the middle of its data,
    or the end of its data (with the tar padding, but before the end-of-archive blocks)."""
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return {"header": info.offset, "data": info.offset_data + info.size // 2,
            "end": info.offset_data + padded}[where]  # fmt: skip


@pytest.mark.parametrize(
    ("member", "where", "kept"),
    [
        ("000000002.json", "header", 2),  # cut between samples 1 and 2
        ("000000001.png", "data", 1),  # cut inside sample 1: it is not used
        ("000000002.txt", "end", 3),  # cut after the last sample's last member
    ],
)
def test_a_truncated_shard_keeps_its_whole_samples_and_counts_the_cut_once(
    make_records, tmp_path, member, where, kept
):
    records = make_records(3)
    write_records(records, tmp_path, "webdataset", shard_size=10)
    shard = tmp_path / "shard-000000.tar"
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[: cut_at(shard, member, where)])
    items = list(WebDatasetShards(str(truncated)))
    assert [r.image_id for r in items[:-1]] == [r.image_id for r in records[:kept]]
    assert items[-1] == SkippedRecord("corrupt", str(truncated))


def write_img2dataset_shard(folder, captions: list[str]) -> str:
    """A shard as img2dataset writes one: keys from 000000000, no image id anywhere."""
    folder.mkdir()
    shard = folder / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for index, caption in enumerate(captions):
            buffer = io.BytesIO()
            Image.new("RGB", (2, 2)).save(buffer, format="PNG")
            for suffix, data in (("png", buffer.getvalue()), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{index:09d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(shard)


def test_samples_without_an_id_get_one_per_shard_set_the_same_everywhere(tmp_path):
    urls = [write_img2dataset_shard(tmp_path / name, [f"{name} 0", f"{name} 1"])
            for name in ("first", "second")]  # fmt: skip

    def ids(records) -> dict[str, int]:
        return {r.captions[0]: r.image_id for r in records}

    plain = ids(WebDatasetShards(urls))
    assert len(set(plain.values())) == 4  # both datasets' key 000000000 and 000000001
    shuffled = WebDatasetShards(urls, shuffle_shards=True, seed=1)
    shuffled.set_epoch(1)
    assert ids(shuffled) == plain
    assert ids(r for c in consumers(2, 2) for r in WebDatasetShards(urls).iter_as(c)) == plain
