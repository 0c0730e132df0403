"""Dataset mixture: one batch of every dataset per step, gradient Σ_d λ_d ∇L_d."""

from __future__ import annotations

import pytest
import torch

from tests.objectives.flamingo_tiny import open_gates, tiny_data, tiny_flamingo, tiny_model
from tests.tiny import quiet_trainer
from vlp.datamodules.mixture import MixturePart
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.media_text import SyntheticClips, SyntheticDocuments
from vlp.objectives.contrastive import Contrastive


def mixture() -> list[MixturePart]:
    return [
        MixturePart("pairs", SyntheticScenes("train", 8, image_size=32), weight=0.2),
        MixturePart(
            "docs", SyntheticDocuments("train", 4, image_size=32, max_scenes=3), weight=1.0,
            objectives=["flamingo"], batch_size=2,
        ),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    itc, flamingo = Contrastive(embed_dim=8), tiny_flamingo()
    model = tiny_model([itc, flamingo])
    open_gates(flamingo)  # so the LM loss reaches the vision tower too
    data = tiny_data(model, mixture=mixture(), shuffle=False)
    batch, _, _ = next(iter(data.train_dataloader()))
    return model, itc, flamingo, batch


def test_a_step_holds_one_batch_of_every_dataset(setup):
    _, _, _, batch = setup
    assert set(batch) == {"pairs", "docs"}
    assert batch["pairs"]["images"].shape[0] == 4 and "media" not in batch["pairs"]
    assert batch["docs"]["media"].shape[:2] == (2, 3)
    assert batch["docs"]["dataset"].weight == 1.0


def test_the_step_gradient_is_the_weighted_sum_of_each_datasets_gradient(setup):
    model, itc, flamingo, batch = setup
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(model.training_step(batch, 0), params, allow_unused=True)

    pairs, docs = model.step(batch["pairs"]), model.step(batch["docs"])
    pairs_loss = itc(pairs)["contrastive_loss"] + flamingo(pairs)["lm_loss"]
    docs_loss = flamingo(docs)["lm_loss"]  # ITC is not configured on documents
    expected = [torch.zeros_like(p) for p in params]
    for weight, loss in ((0.2, pairs_loss), (1.0, docs_loss)):
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for total, grad in zip(expected, grads, strict=True):
            if grad is not None:
                total += weight * grad
    compared = 0
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.zeros_like(e) if g is None else g, e)
        compared += int(e.abs().sum() > 0)
    assert compared > 10


def test_fit_logs_each_dataset_and_cycles_the_shorter_one(setup, tmp_path):
    model = tiny_model([Contrastive(embed_dim=8), tiny_flamingo()])
    parts = [*mixture(), MixturePart("clips", SyntheticClips("train", 1, num_frames=2,
             image_size=32), weight=0.03, objectives=["flamingo"], batch_size=1)]  # fmt: skip
    data = tiny_data(model, mixture=parts)
    seen = []
    trainer = quiet_trainer(max_epochs=1, log_every_n_steps=1)
    original = model.training_step

    def training_step(batch, batch_idx):
        seen.append({name: len(part["lm_ids"]) for name, part in batch.items()})
        return original(batch, batch_idx)

    model.training_step = training_step
    trainer.fit(model, data)
    # the longest datasets set the epoch (2 steps); the one-batch clips dataset cycles
    assert seen == [{"pairs": 4, "docs": 2, "clips": 1}] * 2
    logged = set(trainer.logged_metrics)
    assert {"train/pairs/itc/contrastive_loss", "train/pairs/flamingo/lm_loss",
            "train/docs/flamingo/lm_loss", "train/clips/loss", "train/loss"} <= logged  # fmt: skip
    assert "train/docs/itc/contrastive_loss" not in logged


def test_unknown_objective_names_in_the_mixture_fail_loudly(setup):
    model, _, _, batch = setup
    docs = batch["docs"]
    wrong = {"docs": {**docs, "dataset": docs["dataset"]._replace(objectives=("captioning",))}}
    with pytest.raises(ValueError, match="captioning"):
        model.training_step(wrong, 0)


def test_train_and_mixture_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        tiny_data(tiny_model([Contrastive(embed_dim=8)]),
                  train=SyntheticScenes("train", 4, image_size=32), mixture=mixture())  # fmt: skip
