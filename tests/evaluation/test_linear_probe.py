"""The linear probe: a converged logistic regression, a deterministic half/half split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.evaluation.test_rerank import tiny_model
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.scene import COLOURS
from vlp.encoding import Encoding
from vlp.evaluation.linear_probe import (
    fit_logistic_regression,
    linear_probe_accuracy,
    probe_features,
)
from vlp.objectives.contrastive import Contrastive


def test_fit_reaches_the_regularised_optimum() -> None:
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randint(3, (40,), generator=torch.Generator().manual_seed(1))
    weight, bias = fit_logistic_regression(x, y, 3, weight_decay=0.1, steps=200)
    # At the optimum the gradient of mean CE + λ/2‖W‖² vanishes, by hand:
    residual = F.softmax(x @ weight + bias, -1) - F.one_hot(y, 3).float()
    assert torch.allclose(x.T @ residual / 40 + 0.1 * weight, torch.zeros(3, 3), atol=1e-4)
    assert torch.allclose(residual.mean(0), torch.zeros(3), atol=1e-4)


def test_separable_classes_are_found_and_unlabelled_images_ignored() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(60, 8, generator=generator)
    features[torch.arange(60), labels] += 6.0  # class c shifted along direction c
    labels[::7] = -1
    assert linear_probe_accuracy(features, labels, torch.arange(60)) == 1.0
    noise = torch.randn(60, 8, generator=generator)
    assert linear_probe_accuracy(noise, labels, torch.arange(60)) < 0.8


def test_split_is_by_image_id_not_by_arrival_order() -> None:
    generator = torch.Generator().manual_seed(2)
    features, labels = torch.randn(30, 4, generator=generator), torch.arange(30) % 2
    ids = torch.arange(30)
    order = torch.randperm(30, generator=generator)
    first = linear_probe_accuracy(features, labels, ids)
    assert linear_probe_accuracy(features[order], labels[order], ids[order]) == first
    # Even positions fit, odd ones score: relabelling only the odd ones changes the score.
    flipped = labels.clone()
    flipped[1::2] = 1 - flipped[1::2]
    assert linear_probe_accuracy(features, flipped, ids) == pytest.approx(1 - first)


def test_works_inside_inference_mode_like_lightning_validation() -> None:
    with torch.inference_mode():
        features, labels = torch.randn(10, 4), torch.arange(10) % 2
        assert 0 <= linear_probe_accuracy(features, labels, torch.arange(10)) <= 1


def test_features_are_the_pooled_output_and_the_mean_patch() -> None:
    image = Encoding(pooled=torch.ones(2, 3), tokens=torch.arange(24.0).view(2, 4, 3))
    features = probe_features(image)
    assert torch.equal(features[0], torch.tensor([1.0, 1, 1, 4.5, 5.5, 6.5]))


@torch.no_grad()
def test_the_evaluator_probes_each_scene_attribute_on_the_same_features() -> None:
    torch.manual_seed(0)
    model = tiny_model([Contrastive(embed_dim=16)], fusion=None)
    scenes = SyntheticScenes("val", 24, image_size=32)
    data = VLPDataModule(val=scenes, batch_size=5, num_workers=0, image_size=32,
                         tokenize=model.tokenize)  # fmt: skip
    for batch in data.val_dataloader():
        model.evaluator.add(batch)
    metrics = model.evaluator.compute(None, None)

    records = [scenes[i] for i in range(len(scenes))]
    images = torch.stack([data.eval_transform(r.image) for r in records])
    features = probe_features(model.encoders.vision(images))
    ids = torch.tensor([r.image_id for r in records])
    objects = [r.meta["objects"] for r in records]
    colours = torch.tensor([list(COLOURS).index(o[0]["colour"]) for o in objects])
    counts = torch.tensor([len(o) for o in objects])
    labels = torch.tensor([r.label for r in records])
    for metric, target in (("acc", labels), ("colour_acc", colours), ("count_acc", counts)):
        expected = linear_probe_accuracy(features, target, ids)
        assert metrics[f"linear_probe/{metric}"] == pytest.approx(expected, abs=1e-6)
