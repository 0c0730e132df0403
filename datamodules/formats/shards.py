"""img2dataset-style WebDataset tar shards, streamed.

A sample is the tar members sharing a key: ``{key}.jpg|jpeg|png|webp``, a
``{key}.txt`` caption and an optional ``{key}.json`` whose ``captions`` (a list,
overriding the .txt), ``image_id``, ``label`` and ``meta`` are used. Without an
``image_id`` the id is a hash of the shard's URL, as listed in ``urls``, and the key:
the same in every epoch, rank and worker, and apart for two datasets whose keys
repeat (img2dataset numbers every dataset from 000000000). The
``webdataset`` library opens shards and groups members; the split across ranks
and workers is ours (see ``split.py``) so that nothing is read twice or dropped.
"""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import IO, Any

from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, group_by_keys

from vlp.datamodules.formats.decode import MAX_PIXELS
from vlp.datamodules.formats.fields import parse_entry
from vlp.datamodules.formats.sample import RawSample, check_on_error, materialise
from vlp.datamodules.formats.split import (
    Consumer,
    WorkerStart,
    assigned_to,
    current_consumer,
    splits_by_shard,
)
from vlp.datamodules.records import BadSampleError, ImageTextRecord, SkippedRecord

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")

Entry = dict[str, Any] | BadSampleError  # a grouped tar sample, or why a shard broke


class WebDatasetShards(IterableDataset):
    """Streams records from ``urls`` (brace patterns like ``shard-{000..009}.tar`` allowed).

    With ``shuffle_shards`` the shard order is a permutation fixed by ``seed`` and
    the epoch given to ``set_epoch``, identical in every consumer. DataLoader
    workers receive a copy of the dataset when an epoch's iterator is created,
    so call ``set_epoch`` (and ``start_next_pass``) before that (not with
    ``persistent_workers``); the data module's training loader does
    (``vlp.datamodules.lockstep``).
    """

    can_start_part_way = True

    def __init__(
        self,
        urls: str | list[str],
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
        shuffle_shards: bool = False,
        seed: int = 0,
    ) -> None:
        patterns = [urls] if isinstance(urls, str) else list(urls)
        self.urls = [url for pattern in patterns for url in expand_urls(str(pattern))]
        if not self.urls:
            raise ValueError(f"no shards in {urls!r}")
        self.on_error = check_on_error(on_error)
        self.max_pixels = max_pixels
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.epoch = 0
        self.starts: tuple[WorkerStart, ...] = ()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_order(self) -> list[str]:
        order = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return order

    def start_next_pass(self, starts: tuple[WorkerStart, ...]) -> None:
        """Where each DataLoader worker starts the next pass (``starts[w]`` for worker ``w``):
        how a run resumed mid-epoch goes on where its checkpoint left the stream. Skipped
        items are read but not decoded. Clear it (``()``) once the pass has started."""
        self.starts = tuple(starts)

    def __iter__(self) -> Iterator[ImageTextRecord | SkippedRecord]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        start = self.starts[worker] if self.starts else WorkerStart(worker, 0)
        consumer = current_consumer(worker=start.reads_as, num_workers=num_workers)
        return self.iter_as(consumer, start.skip)

    def iter_as(
        self, consumer: Consumer, skip: int = 0
    ) -> Iterator[ImageTextRecord | SkippedRecord]:
        """This consumer's share of the stream, decoded, from its ``skip``-th item on."""
        shards = self.shard_order()
        if splits_by_shard(len(shards), consumer):
            mine = [url for position, url in enumerate(shards) if assigned_to(position, consumer)]
            entries: Iterable[Entry] = self._entries(mine)
        else:
            entries = (
                e
                for position, e in enumerate(self._entries(shards))
                if assigned_to(position, consumer)
            )
        for entry in islice(entries, skip, None):
            yield self.record(entry)

    def record(self, entry: Entry) -> ImageTextRecord | SkippedRecord:
        """A grouped tar sample decoded, or skipped (or raising, with ``on_error="raise"``)."""
        return materialise(_to_sample(entry), self.on_error, self.max_pixels)

    def is_whole(self, entry: dict[str, Any]) -> bool:
        """Whether a sample that a shard's break left behind has every member it needs."""
        raw = _to_sample(entry)
        return isinstance(raw, RawSample) and bool(raw.captions)

    def _entries(self, urls: Iterable[str]) -> Iterator[Entry]:
        for url in urls:
            yield from _shard_entries(url, self.is_whole)


def _shard_entries(url: str, is_whole: Callable[[dict[str, Any]], bool]) -> Iterator[Entry]:
    """A shard's samples; an unreadable shard ends with one error entry.

    The error is yielded at the point where reading stopped, so every consumer
    sees it at the same stream position and exactly one of them reports it. The
    samples read whole before it are kept: the one ``group_by_keys`` still held when
    reading stopped too, unless reading stopped inside it or it is not ``is_whole``
    (its members may have been cut off; the shard's error counts it).
    """
    try:
        stream = gopen(url)
    except OSError as error:
        yield BadSampleError("missing", url, str(error))
        return
    members = TarMembers(url, stream)
    try:
        with stream:
            for sample in group_by_keys(members):
                cut = members.error is not None
                if not cut or (sample["__key__"] != members.cut_key and is_whole(sample)):
                    yield sample
    except (OSError, ValueError) as error:  # closing a pipe; a member twice in one sample
        yield BadSampleError("corrupt", url, str(error))
        return
    if members.error is not None:
        yield BadSampleError("corrupt", url, str(members.error))


class TarMembers:
    """Regular files in a tar stream, as ``group_by_keys`` wants them, until the first
    error: ``error`` keeps it and ``cut_key`` the key of the member whose data it cut
    (None when it cut a header, or after the last member).

    ``tarfile`` ends quietly when a file is cut at a header boundary, which would
    drop the rest of a truncated shard unnoticed; a well-formed tar always has
    data after its first end-of-archive block, so a stream that ends right
    after the last member is reported as truncated.
    """

    def __init__(self, url: str, stream: IO[bytes]) -> None:
        self.url = url
        self.stream = stream
        self.error: Exception | None = None
        self.cut_key: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            with tarfile.open(fileobj=self.stream, mode="r|*") as tar:
                for info in tar:
                    if info.isreg():
                        self.cut_key = base_plus_ext(info.name)[0]
                        member = tar.extractfile(info)
                        data = member.read() if member else b""
                        self.cut_key = None
                        yield {"fname": info.name, "data": data, "__url__": self.url}
                    tar.members = []  # streaming: do not keep every header of a large shard
                if not tar.fileobj.read(1):
                    raise tarfile.ReadError("no end-of-archive marker; the shard is truncated")
        except (tarfile.TarError, OSError, EOFError) as error:
            self.error = error


def _to_sample(entry: Entry) -> RawSample | BadSampleError:
    if isinstance(entry, BadSampleError):
        return entry
    key = f"{entry['__url__']}:{entry['__key__']}"
    image = next((entry[suffix] for suffix in IMAGE_SUFFIXES if suffix in entry), None)
    if image is None:
        return BadSampleError("missing", key, f"no .{'/.'.join(IMAGE_SUFFIXES)} member")
    try:
        info = json.loads(entry["json"]) if "json" in entry else {}
    except ValueError as error:  # bad JSON or bad UTF-8
        return BadSampleError("corrupt", key, f".json: {error}")
    if not isinstance(info, dict):
        return BadSampleError("bad_field", key, ".json is not an object")
    return parse_entry(
        image,
        info.get("captions", entry.get("txt")),
        image_id=info.get("image_id"),
        label=info.get("label"),
        meta=info.get("meta"),
        id_fallback=key,  # the shard's URL too: img2dataset starts every dataset at key 0
        key=key,
        where=key,
    )
