"""The module: weighted sum of objectives, per-objective logs, teachers after each optimizer step."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from lightning.pytorch import Callback

from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer, tiny_data
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.formats.writers import open_written, write_records
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.base import Objective, weighted_total
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.momentum import MomentumContrastive
from vlp.teachers import DecaySchedule, TeacherSpec


class TeacherReader(Objective):
    """A toy objective that reads an EMA teacher of the vision tower."""

    name = "teacher_reader"
    spec = TeacherSpec("vision", DecaySchedule(0.5))
    needs: ClassVar[frozenset[str]] = frozenset({"images"})

    def forward(self, step):
        target = step.teacher(self.spec)(step.field("images")).pooled
        return {"distance_loss": (step.image().pooled - target).pow(2).mean()}

    def teacher_specs(self):
        return (self.spec,)


def tiny_model(objectives, **kwargs) -> VLPModule:
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        objectives,
        **kwargs,
    )


def test_weighted_total_sums_only_loss_terms() -> None:
    terms = {
        "a_loss": torch.tensor(2.0),
        "b_loss": torch.tensor(3.0),
        "temperature": torch.tensor(9.0),
    }
    assert weighted_total(terms, 0.5).item() == 2.5
    with pytest.raises(ValueError, match="_loss"):
        weighted_total({"temperature": torch.tensor(1.0)}, 1.0)


def test_teachers_update_once_per_optimizer_step_from_the_new_weights() -> None:
    model = tiny_model([Contrastive(embed_dim=8), TeacherReader(weight=0.1)])
    (key,) = model.teachers.keys()
    teacher = model.teachers[key]
    assert all(
        torch.equal(t, o)
        for t, o in zip(
            teacher.module.parameters(), model.encoders.vision.parameters(), strict=True
        )
    )
    expected = [p.detach().clone() for p in model.encoders.vision.parameters()]

    class FollowEMA(Callback):
        """After every optimizer step: θ_t ← ½θ_t + ½θ (online weights just updated)."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
                for e, p in zip(expected, pl_module.encoders.vision.parameters(), strict=True):
                    e.mul_(0.5).add_(0.5 * p.detach())

    data = tiny_data(SyntheticScenes("train", 16, image_size=32), model.tokenize)
    trainer = quiet_trainer(
        max_steps=2,
        accumulate_grad_batches=2,
        callbacks=[FollowEMA()],
    )
    trainer.fit(model, data)
    assert int(teacher.updates) == 2  # 4 batches, 2 optimizer steps
    for t, e in zip(teacher.module.parameters(), expected, strict=True):
        assert torch.allclose(t, e, atol=1e-6)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert any(k.startswith("teachers.") for k in model.state_dict())


def test_every_optimizer_step_keeps_the_contrastive_temperature_in_its_range() -> None:
    """SGD at lr 100 throws τ far out of [0.05, 0.1]; each step must use it clamped."""
    model = tiny_model(
        [Contrastive(embed_dim=8, temperature_range=(0.05, 0.1))],
        optimizer=lambda params: torch.optim.SGD(params, lr=100.0),
    )
    used = []

    class ReadTemperature(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            used.append(trainer.callback_metrics["train/itc/temperature"].item())

    data = tiny_data(SyntheticScenes("train", 16, image_size=32), model.tokenize)
    quiet_trainer(max_steps=4, callbacks=[ReadTemperature()]).fit(model, data)
    in_range = pytest.approx(0.075, abs=0.025 + 1e-6)
    assert len(used) == 4 and all(tau == in_range for tau in used)
    assert len(set(used)) > 1  # τ did move (to a bound)
    assert model.objectives[0].temperature.item() == in_range  # the last update is clamped too


def test_a_dropout_teacher_trains_with_dropout_and_evaluates_without() -> None:
    """TCL's momentum text encoder keeps dropout on in training (its only text
    augmentation); Lightning never calls train() at fit start, so the mode must hold
    from construction."""
    model = tiny_model([MomentumContrastive(embed_dim=8, queue_size=8, momentum_dropout=True)])
    modes: dict[str, set[tuple[bool, bool]]] = {"train": set(), "validation": set()}

    def teacher_modes(pl_module) -> tuple[bool, bool]:
        by_source = {key.split("_ema")[0]: t for key, t in pl_module.teachers.items()}
        return by_source["text"].module.training, by_source["vision"].module.training

    class ReadModes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            modes["train"].add(teacher_modes(pl_module))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *_) -> None:
            modes["validation"].add(teacher_modes(pl_module))

    data = VLPDataModule(
        train=SyntheticScenes("train", 8, image_size=32),
        val=SyntheticScenes("val", 4, image_size=32),
        batch_size=4,
        num_workers=0,
        image_size=32,
        tokenize=model.tokenize,
    )
    trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=0, callbacks=[ReadModes()])
    trainer.fit(model, data)
    assert modes == {"train": {(True, False)}, "validation": {(False, False)}}


def test_a_stream_without_max_steps_is_refused_rather_than_decayed_after_one_step(
    tmp_path: Path,
) -> None:
    """Lightning estimates a stream's steps as max_steps (-1 by default): the cosine would
    reach its floor one step after warm-up."""
    scenes = SyntheticScenes("train", num_images=4, image_size=32, captions_per_image=1)
    shards = write_records((scenes[i] for i in range(4)), tmp_path, "webdataset", 4)
    model = tiny_model([Contrastive(embed_dim=8)])
    data = tiny_data(open_written(shards, "webdataset"), model.tokenize)
    with pytest.raises(ValueError, match=r"set trainer\.max_steps"):
        quiet_trainer(max_epochs=1).fit(model, data)


@pytest.mark.parametrize(
    ("accumulate", "objectives", "warned"),
    [
        (2, lambda: [Contrastive(embed_dim=8)], "itc draw"),
        (2, lambda: [MomentumContrastive(embed_dim=8, queue_size=8)], None),
        (1, lambda: [Contrastive(embed_dim=8)], None),
    ],
    ids=["itc-accumulated", "queue-accumulated", "itc-not-accumulated"],
)
def test_accumulating_batches_of_in_batch_negatives_warns(accumulate, objectives, warned) -> None:
    model = tiny_model(objectives())
    data = tiny_data(SyntheticScenes("train", 8, image_size=32), model.tokenize)
    trainer = quiet_trainer(max_steps=1, accumulate_grad_batches=accumulate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, data)
    negatives = [str(w.message) for w in caught if "negatives" in str(w.message)]
    if warned is None:
        assert not negatives
    else:
        assert len(negatives) == 1 and warned in negatives[0]
        assert f"accumulate_grad_batches={accumulate}" in negatives[0]


def test_each_objective_logs_its_own_terms() -> None:
    model = tiny_model([Contrastive(embed_dim=8), Contrastive(embed_dim=4, weight=0.5)])
    assert model.objective_names == ["itc_0", "itc_1"]


def test_freeze_keeps_weights_fixed_and_in_eval_mode() -> None:
    model = tiny_model([Contrastive(embed_dim=8)], freeze=("encoders.text",))
    assert not model.encoders.text.training  # Lightning keeps the modes it finds
    model.train()
    assert not model.encoders.text.training and model.encoders.vision.training
    assert all(not p.requires_grad for p in model.encoders.text.parameters())
    with pytest.raises(ValueError, match="no module named"):
        tiny_model([Contrastive()], freeze=("encoders.txt",))
