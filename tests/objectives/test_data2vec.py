"""data2vec against hand computations: targets, loss positions, the teacher and its inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.masking import BlockMasking, SpanMasking
from vlp.module import VLPModule
from vlp.objectives.data2vec import (
    VISION_EMBEDDINGS,
    Data2Vec,
    ImageBranch,
    Targets,
    TextBranch,
    regression_loss,
    regression_targets,
)
from vlp.teachers import DecaySchedule

EMA = DecaySchedule(0.9, 0.99, 10)


def layer_norm_by_hand(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    var = sum((x - mean) ** 2 for x in row) / len(row)
    return [(x - mean) / math.sqrt(var + 1e-5) for x in row]


def test_targets_average_the_normalised_top_k_layers_by_hand() -> None:
    layers = [torch.randn(1, 2, 4) for _ in range(3)]
    targets = regression_targets(layers, Targets(top_k=2, layer_norm="layer", final_norm=True))
    for t in range(2):
        normed = [layer_norm_by_hand(layer[0, t].tolist()) for layer in layers[1:]]
        average = [(a + b) / 2 for a, b in zip(*normed, strict=True)]
        assert targets[0, t].tolist() == pytest.approx(layer_norm_by_hand(average), abs=1e-4)
    plain = regression_targets(layers, Targets(top_k=3, layer_norm="none"))
    assert torch.allclose(plain, (layers[0] + layers[1] + layers[2]) / 3)


def test_instance_norm_is_over_the_real_positions_of_each_channel() -> None:
    layer = torch.tensor([[[1.0, 10.0], [3.0, 20.0], [100.0, -50.0]]])  # [1, 3 positions, 2]
    valid = torch.tensor([[True, True, False]])
    y = regression_targets([layer], Targets(top_k=1, layer_norm="instance"), valid)
    # Channel 0 over positions 0, 1: mean 2, variance 1; channel 1: mean 15, variance 25.
    expected = [[-1 / math.sqrt(1 + 1e-5), -5 / math.sqrt(25 + 1e-5)]]
    expected.append([1 / math.sqrt(1 + 1e-5), 5 / math.sqrt(25 + 1e-5)])
    assert y[0, :2].tolist() == [pytest.approx(r, abs=1e-5) for r in expected]


def test_too_many_target_layers_are_refused() -> None:
    with pytest.raises(ValueError, match="top_k=3"):
        regression_targets([torch.zeros(1, 1, 2)] * 2, Targets(top_k=3))


def test_smooth_l1_and_squared_error_by_hand() -> None:
    prediction, target = torch.tensor([[0.5, 3.0]]), torch.zeros(1, 2)
    # |d| ≤ β: ½d²/β = 0.0625; |d| > β: |d| − ½β = 2.
    assert regression_loss(prediction, target, beta=2.0).item() == pytest.approx(2.0625)
    assert regression_loss(prediction, target, beta=0.0).item() == pytest.approx(9.25)


def build(modality: str = "image", **kwargs) -> tuple[VLPModule, Data2Vec]:
    objective = Data2Vec(modality=modality, ema=EMA, **kwargs)
    model = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [objective],
        fusion=FusionConfig(depth=2, heads=2),
    )
    return model, objective


def image_batch(model: VLPModule) -> dict:
    mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    return {"images": torch.rand(2, 3, 32, 32), "image_mask": mask, "image_ids": torch.arange(2)}


IMAGE_TARGETS = ImageBranch(
    min_block=2, targets=Targets(top_k=2, layer_output="block", final_norm=True)
)


def test_image_loss_regresses_teacher_targets_at_masked_patches_only() -> None:
    model, objective = build(image=IMAGE_TARGETS)
    batch = image_batch(model)
    step = model.step(batch)
    student = step.masked_image()
    student.tokens.retain_grad()
    terms = objective(step)
    teacher = model.teachers[objective.vision_teacher.key].module
    with torch.no_grad():
        a = teacher(batch["images"]).hidden_states
        y = F.layer_norm((F.layer_norm(a[0], (32,)) + F.layer_norm(a[1], (32,))) / 2, (32,))
    mask = batch["image_mask"]
    prediction = objective.image_head(model.encoders.vision(batch["images"], mask).tokens[mask])
    expected = F.smooth_l1_loss(prediction, y[mask], beta=2.0)  # mean over masked elements
    assert terms["image_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    terms["image_loss"].backward()
    grad = student.tokens.grad.abs().sum(-1)
    assert (grad[~mask] == 0).all() and (grad[mask] > 0).all()


def test_teacher_starts_as_the_student_and_never_gets_gradients() -> None:
    model, objective = build(image=IMAGE_TARGETS)
    teacher = model.teachers[objective.vision_teacher.key]
    student = dict(model.encoders.vision.named_parameters())
    for name, param in teacher.module.named_parameters():
        assert torch.equal(param, student[name]) and not param.requires_grad
    objective(model.step(image_batch(model)))["image_loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.module.training and teacher.schedule == EMA
    assert teacher.schedule(0) == 0.9 and teacher.schedule(10) == 0.99


def test_ema_follows_tau_and_shared_embeddings_are_copied() -> None:
    model, objective = build(image=IMAGE_TARGETS, share_embeddings=True)
    teacher = model.teachers[objective.vision_teacher.key]
    assert teacher.shared == VISION_EMBEDDINGS
    before = {n: p.clone() for n, p in teacher.module.named_parameters()}
    with torch.no_grad():
        for param in model.encoders.vision.parameters():
            param.add_(1.0)
    teacher.update()  # τ(0) = 0.9
    student = dict(model.encoders.vision.named_parameters())
    for name, param in teacher.module.named_parameters():
        if name.startswith(VISION_EMBEDDINGS):
            assert torch.equal(param, student[name]), name
        else:
            assert torch.allclose(param, 0.9 * before[name] + 0.1 * student[name], atol=1e-6), name


def test_needs_carry_mask_recipes_sized_by_the_encoders() -> None:
    model, objective = build("multimodal")
    recipes = {type(n): n for n in objective.needs if not isinstance(n, str)}
    assert recipes[BlockMasking].grid == model.encoders.vision.patch_grid == (4, 4)
    tokenizer = model.encoders.text.tokenizer
    assert recipes[SpanMasking].mask_id == tokenizer.mask_token_id
    assert {"images", "text", "fusion"} <= objective.needs
    assert model.encoders.vision.mask_token is not None
    _, text_only = build("text")
    assert not any(isinstance(n, BlockMasking) for n in text_only.needs)


def text_batch(model: VLPModule, recipe: SpanMasking, seed: int) -> dict:
    batch = model.tokenize(["a small red circle left of a blue square", "a green star"])
    masked = recipe(batch["text_ids"], batch["text_mask"], torch.Generator().manual_seed(seed))
    return {**batch, "masked_text_ids": masked.ids, "text_mask_positions": masked.selected}


def test_text_teacher_reads_the_full_caption_and_the_student_the_masked_one() -> None:
    text = TextBranch(mask_ratio=0.5, targets=Targets(top_k=2))
    model, objective = build("text", text=text)
    recipe = next(n for n in objective.needs if isinstance(n, SpanMasking))
    first, second = text_batch(model, recipe, 0), text_batch(model, recipe, 1)
    assert not torch.equal(first["masked_text_ids"], second["masked_text_ids"])
    layers = [objective.text_layers(model.step(b)) for b in (first, second)]
    assert all(torch.equal(a, b) for a, b in zip(*layers, strict=True))  # targets ignore the mask
    teacher = model.teachers[objective.text_teacher.key].module
    recorded = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: recorded.append(o)) for m in teacher.ffn_modules()
    ]
    teacher(first["text_ids"], first["text_mask"])  # the full caption, FFN outputs
    for hook in hooks:
        hook.remove()
    assert all(torch.equal(a, b) for a, b in zip(layers[0], recorded, strict=True))
    step = model.step(first)
    student = model.encoders.text(first["masked_text_ids"], first["text_mask"]).tokens
    assert torch.allclose(step.masked_text().tokens, student)
    terms = objective(step)
    assert terms["text_loss"] > 0 and set(terms) >= {"text_target_std", "text_prediction_std"}


def test_text_loss_sums_over_dimensions_and_averages_over_masked_tokens() -> None:
    """The released text recipe (``loss_scale: 1``): Σ over a token's dimensions of
    Smooth-L1 with β = 4, then the mean over masked tokens; images average every element."""
    text = TextBranch(mask_ratio=0.5, targets=Targets(top_k=2))
    model, objective = build("text", text=text)
    recipe = next(n for n in objective.needs if isinstance(n, SpanMasking))
    batch = text_batch(model, recipe, 0)
    step = model.step(batch)
    terms = objective(step)
    with torch.no_grad():
        y = regression_targets(objective.text_layers(step), text.targets, batch["text_mask"].bool())
        selected = batch["text_mask_positions"]
        student = model.encoders.text(batch["masked_text_ids"], batch["text_mask"]).tokens
        prediction = objective.text_head(student[selected])
    per_token = F.smooth_l1_loss(prediction, y[selected], beta=4.0, reduction="none").sum(-1)
    assert selected.sum() > 1 and prediction.shape[-1] == TINY_TEXT["hidden_size"]
    assert terms["text_loss"].item() == pytest.approx(per_token.mean().item(), rel=1e-5)


def test_multimodal_caption_targets_come_after_the_fusion_layers_with_the_full_image() -> None:
    model, objective = build(
        "multimodal", image=IMAGE_TARGETS, text=TextBranch(mask_ratio=0.5, targets=Targets(top_k=3))
    )
    recipe = next(n for n in objective.needs if isinstance(n, SpanMasking))
    batch = {**text_batch(model, recipe, 0), **image_batch(model)}
    layers = objective.fused_text_layers(model.step(batch))
    assert len(layers) == TINY_TEXT["num_hidden_layers"] + 2  # text then fusion layers
    other = {**batch, "images": torch.rand(2, 3, 32, 32)}
    changed = objective.fused_text_layers(model.step(other))
    assert torch.equal(layers[0], changed[0])  # text layers do not see the image
    assert not torch.allclose(layers[-1], changed[-1])  # fusion layers do
    terms = objective(model.step(batch))
    total = terms["image_loss"] + terms["text_loss"]
    total.backward()
    assert model.encoders.vision.mask_token.grad is not None
    assert objective.text_head[0].weight.grad is not None
