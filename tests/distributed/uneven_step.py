"""One SGD step on a global batch that two ranks hold unevenly (a corrupt sample skipped on
one of them), or on the same global batch in one process; save the weights.

Launched by ``test_uneven_batches.py`` as ``python -m tests.distributed.uneven_step DEVICES
OUT OBJECTIVE`` (an objective of ``one_step.py``). With 2 devices: 4 training scenes in
order, batches of 2, so rank 0 reads scenes 0 and 2 and rank 1 reads 1 and 3; scene 3's
image is corrupt, so rank 1 trains on scene 1 alone. With 1 device: scenes 0, 2 and 1 in
one batch of 3, the order in which the ranks' rows are gathered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightning.pytorch import seed_everything
from safetensors.torch import save_file

from tests.distributed.one_step import fit_and_record, plain_data, rank_path, tiny_model
from vlp.datamodules.formats.manifest import JsonlManifest
from vlp.datamodules.formats.writers import write_records
from vlp.datamodules.synthetic import SyntheticScenes

CORRUPT = 3


def manifest(root: Path, devices: int) -> Path:
    scenes = SyntheticScenes("train", num_images=4, image_size=32, captions_per_image=1)
    if devices == 1:
        return write_records((scenes[i] for i in (0, 2, 1)), root, "jsonl")
    path = write_records((scenes[i] for i in range(4)), root, "jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    (root / rows[CORRUPT]["image"]).write_bytes(b"not a png")
    return path


def main(devices: int, out: Path, name: str) -> None:
    seed_everything(0)
    model = tiny_model(name)
    train = JsonlManifest(manifest(out.parent / f"data{devices}", devices))
    data = plain_data(train, 2 if devices > 1 else 3, model)
    rank, state = fit_and_record(model, data, devices, steps=1)
    save_file(state, str(rank_path(out, rank)))


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
