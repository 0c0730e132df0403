"""Bad samples in a real manifest are skipped, counted and logged per epoch, or fail fast."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer, tiny_data
from vlp.datamodules.formats.manifest import JsonlManifest
from vlp.datamodules.formats.writers import write_records
from vlp.datamodules.records import BadSampleError
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive


def damaged_manifest(root: Path) -> Path:
    scenes = SyntheticScenes("train", num_images=12, image_size=32, captions_per_image=2)
    manifest = write_records((scenes[i] for i in range(12)), root, "jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    (root / rows[1]["image"]).write_bytes(b"not a png")  # corrupt
    (root / rows[2]["image"]).unlink()  # missing
    rows[3]["caption"] = ["", "  "]  # no usable caption
    rows[4]["caption"] = [rows[4]["caption"][0], ""]  # one bad caption among good ones
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    return manifest


def fit(manifest: Path, log_dir: Path, on_error: str) -> Path:
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [Contrastive(embed_dim=8)],
    )
    data = tiny_data(JsonlManifest(manifest, on_error=on_error), model.tokenize)
    trainer = quiet_trainer(
        max_epochs=2,
        logger=CSVLogger(log_dir, name="bad"),
    )
    trainer.fit(model, data)
    return Path(trainer.logger.log_dir) / "metrics.csv"


def test_bad_samples_are_skipped_and_counted_every_epoch(tmp_path: Path) -> None:
    metrics = fit(damaged_manifest(tmp_path / "data"), tmp_path / "logs", on_error="skip")
    with open(metrics) as f:
        epochs = [row for row in csv.DictReader(f) if row.get("data/skipped_corrupt")]
    assert len(epochs) == 2
    for row in epochs:
        assert float(row["data/skipped_corrupt"]) == 1
        assert float(row["data/skipped_missing"]) == 1
        assert float(row["data/skipped_empty_caption"]) == 1  # the dead record
        assert float(row["data/skipped_caption_empty_caption"]) == 1  # a kept record's caption


def test_fail_fast_names_the_bad_file(tmp_path: Path) -> None:
    with pytest.raises(BadSampleError, match=r"\.png"):
        fit(damaged_manifest(tmp_path / "data"), tmp_path / "logs", on_error="raise")
