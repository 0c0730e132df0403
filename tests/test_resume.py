"""A run killed mid-epoch (or just after an epoch's end) and resumed from its last
checkpoint ends where an uninterrupted run ends, for one dataset, a mixture and a stream:
same weights, EMA teachers, queues, optimizer state and losses, because every step after
the resume sees the batch it would have seen, with the same random draws (crops, colours,
caption choice, dropout, hard negatives, MLM masks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DistributedSampler

from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer
from vlp.datamodules.datamodule import ResumableSampler, VLPDataModule
from vlp.datamodules.formats.shards import WebDatasetShards
from vlp.datamodules.formats.writers import write_records
from vlp.datamodules.mixture import MixturePart
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.transforms import Augment
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.mlm import MaskedLanguageModeling
from vlp.objectives.momentum import MomentumContrastive

BATCHES_PER_EPOCH = 3
EPOCHS = 3
# optimizer steps: checkpoints at steps 2 and 4 (mid-epoch 0 and 1) and 6 (the end of epoch 1)
CHECKPOINT_EVERY = 2


class Killed(Exception):
    """Stands in for the job being killed."""


class KillAfter(Callback):
    """Raises after ``steps`` optimizer steps, after any checkpoint of that step is written."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        if trainer.global_step >= self.steps:
            raise Killed


class LossRecorder(Callback):
    """The training loss of every optimizer step, keyed by the step it was computed at."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, outputs, *args) -> None:
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


def model() -> VLPModule:
    """Momentum ITC with a queue smaller than an epoch, so it wraps, then ITM and MLM
    through a fusion layer; dropout in the text encoder."""
    torch.manual_seed(0)
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT | {"hidden_dropout_prob": 0.1}, max_length=16),
        [
            MomentumContrastive(embed_dim=16, queue_size=6, momentum=0.9, alpha_warmup_steps=4),
            ImageTextMatching(),
            MaskedLanguageModeling(),
        ],
        fusion=FusionConfig(depth=1, heads=2),
    )


def data(module: VLPModule, kind: str, shards_dir: Path) -> VLPDataModule:
    """Shuffled each epoch, augmented, and one of two captions drawn per image and visit.

    ``mixture`` adds a dataset of 2 batches to the 3-batch one: it restarts within every
    epoch, so a resumed epoch must skip into it by the steps modulo its length. ``stream``
    reads the 3 batches from WebDataset shards of one batch each, in an order shuffled per
    epoch, so a resumed epoch must skip into a stream.
    """
    scenes = SyntheticScenes("train", 4 * BATCHES_PER_EPOCH, captions_per_image=2)
    shorter = SyntheticScenes("val", 8, captions_per_image=2)
    parts = [MixturePart("scenes", scenes), MixturePart("shorter", shorter, weight=0.5)]
    sources = {"one_dataset": {"train": scenes}, "mixture": {"mixture": parts}}
    if kind == "stream":
        shards = write_records((scenes[i] for i in range(len(scenes))), shards_dir, "webdataset", 4)
        sources["stream"] = {"train": WebDatasetShards(str(shards), shuffle_shards=True, seed=1)}
    return VLPDataModule(
        **sources[kind],
        batch_size=4,
        num_workers=0,
        image_size=32,
        augment=Augment(crop_scale=(0.5, 1.0), brightness_contrast=0.4),
        tokenize=module.tokenize,
    )


def train(
    ckpt_dir: Path, *callbacks: Callback, kind: str, ckpt_path: str | None = None
) -> tuple[VLPModule, LossRecorder]:
    recorder = LossRecorder()
    module = model()
    trainer = quiet_trainer(
        max_epochs=EPOCHS,
        max_steps=EPOCHS * BATCHES_PER_EPOCH,  # a stream's length: the schedule needs it
        enable_checkpointing=True,
        callbacks=[
            recorder,
            *callbacks,
            ModelCheckpoint(ckpt_dir, every_n_train_steps=CHECKPOINT_EVERY, save_top_k=-1),
        ],
    )
    trainer.fit(
        module,
        datamodule=data(module, kind, ckpt_dir.with_name(f"{ckpt_dir.name}_shards")),
        ckpt_path=ckpt_path,
    )
    return module, recorder


@pytest.fixture(scope="module", params=["one_dataset", "mixture", "stream"])
def uninterrupted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, VLPModule, LossRecorder]:
    return request.param, *train(tmp_path_factory.mktemp("uninterrupted"), kind=request.param)


@pytest.mark.parametrize("kill_after", [3, 5, 7], ids=["epoch0", "epoch1", "epoch_end"])
def test_killed_and_resumed_run_matches_the_uninterrupted_one(
    kill_after: int, uninterrupted: tuple[str, VLPModule, LossRecorder], tmp_path: Path
) -> None:
    kind, reference, reference_losses = uninterrupted
    with pytest.raises(Killed):
        train(tmp_path / "killed", KillAfter(kill_after), kind=kind)
    last = max((tmp_path / "killed").glob("*.ckpt"), key=lambda p: int(p.stem.split("step=")[1]))
    resumed_from = int(last.stem.split("step=")[1])
    assert resumed_from == kill_after - 1
    resumed, resumed_losses = train(tmp_path / "resumed", kind=kind, ckpt_path=str(last))

    assert sorted(resumed_losses.losses) == list(range(resumed_from, EPOCHS * BATCHES_PER_EPOCH))
    for step, loss in resumed_losses.losses.items():
        assert loss == pytest.approx(reference_losses.losses[step], abs=1e-5), step
    reference_state, resumed_state = reference.state_dict(), resumed.state_dict()
    assert any(".image_queue." in k for k in reference_state)
    assert any(k.startswith("teachers.") for k in reference_state)
    for key, value in reference_state.items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-5, rtol=0, msg=key)
    for group_ref, group_res in zip(
        reference.trainer.optimizers[0].state.values(),
        resumed.trainer.optimizers[0].state.values(),
        strict=True,
    ):
        torch.testing.assert_close(group_res["exp_avg"], group_ref["exp_avg"], atol=1e-5, rtol=0)


def test_sampler_skips_what_this_rank_trained_on_only_in_the_resumed_epoch() -> None:
    def indices(sampler: DistributedSampler, epoch: int) -> list[int]:
        sampler.set_epoch(epoch)
        return list(sampler)

    args = (range(12), 2, 1)  # rank 1 of 2
    plain = DistributedSampler(*args, shuffle=True, seed=3, drop_last=True)
    resumed = ResumableSampler(*args, shuffle=True, seed=3, drop_last=True, resume_epoch=1, skip=4)
    assert indices(resumed, 1) == indices(plain, 1)[4:]
    assert indices(resumed, 2) == indices(plain, 2)
    assert len(resumed) == len(plain) == 6


def test_a_restarting_dataset_skips_the_steps_modulo_its_batches_once_per_epoch() -> None:
    sampler = ResumableSampler(
        range(10), 1, 0, shuffle=True, seed=1, drop_last=True, resume_epoch=0
    )
    sampler.resume_after(5, batch_size=3, drop_last=True)  # 3 batches a pass: 5 steps = 1 pass + 2
    full = list(DistributedSampler(range(10), 1, 0, shuffle=True, seed=1, drop_last=True))
    assert list(sampler) == full[6:]
    assert list(sampler) == full  # the next pass in the same epoch starts at its beginning
    sampler.resume_after(5, batch_size=3, drop_last=False)  # 4 batches a pass, the last of 1
    assert sampler.skip == 3
