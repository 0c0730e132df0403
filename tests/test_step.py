"""The step encodes each input once, however many objectives read it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vlp.encoding import Encoding
from vlp.step import Step


def counting_encoders():
    calls = {"vision": 0, "text": 0}

    def vision(images):
        calls["vision"] += 1
        return Encoding(pooled=images.mean((2, 3)), tokens=images.flatten(2).transpose(1, 2))

    def text(ids, mask):
        calls["text"] += 1
        return Encoding(pooled=ids.float(), tokens=ids.float()[..., None], mask=mask)

    return SimpleNamespace(vision=vision, text=text, fusion=None), calls


def test_encodings_are_computed_once_per_step() -> None:
    encoders, calls = counting_encoders()
    batch = {
        "images": torch.rand(2, 3, 4, 4),
        "text_ids": torch.ones(2, 3),
        "text_mask": torch.ones(2, 3),
    }
    step = Step(batch, encoders, {})
    first_image, first_text = step.image(), step.text()
    assert step.image() is first_image and step.text() is first_text
    assert calls == {"vision": 1, "text": 1}
    Step(batch, encoders, {}).image()  # a new step encodes again
    assert calls["vision"] == 2


def test_missing_field_names_what_is_missing() -> None:
    encoders, _ = counting_encoders()
    step = Step({"images": torch.rand(1, 3, 4, 4)}, encoders, {})
    with pytest.raises(KeyError, match="text_ids"):
        step.text()
    with pytest.raises(ValueError, match="fusion"):
        step.fused()


def test_two_objectives_share_one_encoding(tiny_vision, tiny_text) -> None:
    from vlp.encoders import Encoders
    from vlp.objectives.contrastive import Contrastive

    encoders = Encoders(tiny_vision, tiny_text)
    calls = {"n": 0}
    original = encoders.vision.forward

    def counted(images):
        calls["n"] += 1
        return original(images)

    encoders.vision.forward = counted
    objectives = [Contrastive(embed_dim=8), Contrastive(embed_dim=16)]
    for objective in objectives:
        objective.bind(encoders)
    tokens = tiny_text.tokenize(["a red circle", "a blue square"])
    step = Step(
        {"images": torch.rand(2, 3, 32, 32), "image_ids": torch.tensor([0, 1]), **tokens},
        encoders,
        {},
    )
    for objective in objectives:
        objective(step)
    assert calls["n"] == 1


def test_a_steps_gathers_share_one_sync_of_the_ranks_batch_sizes(monkeypatch) -> None:
    """Each sync is a collective and a host–device round trip: once per step, not per gather."""
    syncs = []

    def rank_rows(rows, device):
        syncs.append(rows)
        return [rows]

    monkeypatch.setattr("vlp.step.rank_rows", rank_rows)
    encoders, _ = counting_encoders()
    step = Step({"image_ids": torch.tensor([4, 5, 6])}, encoders, {})
    features = torch.rand(3, 2, requires_grad=True)
    gathered, offset = step.gather(features)
    assert torch.equal(gathered, features) and offset == 0
    assert torch.equal(step.gather_no_grad(step.image_ids), step.image_ids)
    assert step.rank_offset() == 0
    assert syncs == [3]
    with pytest.raises(ValueError, match="one row per batch row"):
        step.gather_no_grad(torch.rand(2, 2))
    Step({"image_ids": torch.tensor([1])}, encoders, {}).gather_no_grad(torch.rand(1))
    assert syncs == [3, 1]  # a new step syncs again
