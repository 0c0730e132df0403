"""Every writer's output reads back to the records that were written."""

from __future__ import annotations

import numpy as np
import pytest

from vlp.datamodules.formats.writers import FORMATS, open_written, write_records
from vlp.datamodules.records import ImageTextRecord


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_identically(fmt, records, tmp_path):
    path = write_records(records, tmp_path / fmt, fmt, shard_size=4)
    source = open_written(path, fmt)
    read = list(source)

    assert all(isinstance(record, ImageTextRecord) for record in read)
    assert len(read) == len(records)
    for written, back in zip(records, read, strict=True):
        np.testing.assert_array_equal(np.array(back.image), np.array(written.image))
        assert back.captions == written.captions
        assert back.image_id == written.image_id
        assert back.label == written.label
        assert back.meta == written.meta
        assert back.key  # says where the record came from


def test_shard_size_splits_output(records, tmp_path):
    pattern = write_records(records, tmp_path, "webdataset", shard_size=4)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert pattern.name == "shard-{000000..000001}.tar"


def test_unknown_format_is_refused(records, tmp_path):
    with pytest.raises(ValueError, match="parquet"):
        write_records(records, tmp_path, "parquet")
