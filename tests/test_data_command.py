"""``vlp data`` writes every split of the embedded scenes in the chosen format, readable back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlp.data_command import main
from vlp.datamodules.formats.writers import open_written
from vlp.datamodules.synthetic import SyntheticScenes


@pytest.mark.parametrize("fmt", ["webdataset", "csv"])
def test_writes_readable_splits_and_class_names(tmp_path: Path, fmt: str) -> None:
    main(["--out", str(tmp_path), "--format", fmt, "--train", "5", "--val", "3", "--test", "2"])
    classes = json.loads((tmp_path / "classes.json").read_text())
    assert classes["class_names"] == list(SyntheticScenes("val", 1).class_names)
    patterns = {"webdataset": "train/shard-*.tar", "csv": "train/manifest.csv"}
    assert list(tmp_path.glob(patterns[fmt]))
    if fmt == "csv":
        records = open_written(tmp_path / "val/manifest.csv", "csv")
        assert len(records) == 3
        assert records[0].captions == SyntheticScenes("val", 3)[0].captions


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises((ValueError, SystemExit)):
        main(["--out", str(tmp_path), "--format", "parquet"])
