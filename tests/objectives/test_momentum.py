"""ALBEF ITC with momentum distillation and queues, against hand computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vlp.encoding import Encoding
from vlp.objectives.momentum import MomentumContrastive
from vlp.step import Step


def normalise(rows):
    return [[a / math.sqrt(sum(x * x for x in r)) for a in r] for r in rows]


def log_softmax(row):
    top = max(row)
    log_z = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_z for x in row]


def hand_distilled(online, momentum, keys, key_ids, ids, tau, alpha):
    """−mean_i Σ_k q_ik log softmax(⟨online_i, K_k⟩/τ), q = α softmax(⟨momentum_i, K⟩/τ) + (1−α) y."""
    online, momentum, keys = normalise(online), normalise(momentum), normalise(keys)
    total = 0.0
    for i in range(len(online)):
        s = [sum(a * b for a, b in zip(online[i], k, strict=True)) / tau for k in keys]
        t = [sum(a * b for a, b in zip(momentum[i], k, strict=True)) / tau for k in keys]
        teacher = [math.exp(x) for x in log_softmax(t)]
        positives = [k for k in range(len(keys)) if key_ids[k] == ids[i]]
        y = [1 / len(positives) if k in positives else 0.0 for k in range(len(keys))]
        q = [alpha * teacher[k] + (1 - alpha) * y[k] for k in range(len(keys))]
        total += -sum(qk * lk for qk, lk in zip(q, log_softmax(s), strict=True))
    return total / len(online)


def identity_objective(dim: int, **kwargs) -> MomentumContrastive:
    objective = MomentumContrastive(embed_dim=dim, **kwargs)
    encoders = SimpleNamespace(vision=SimpleNamespace(width=dim), text=SimpleNamespace(width=dim))
    objective.bind(encoders)
    with torch.no_grad():
        for proj in (objective.image_proj, objective.text_proj):
            proj.weight.copy_(torch.eye(dim))
            proj.bias.zero_()
        for teacher in (objective.image_proj_m, objective.text_proj_m):
            teacher.module.weight.copy_(torch.eye(dim))
            teacher.module.bias.zero_()
    return objective


def make_step(objective, v, w, v_m, w_m, ids, global_step=0, seen=None) -> Step:
    def encoding(x):
        return Encoding(pooled=torch.tensor(x), tokens=torch.tensor(x)[:, None])

    def vision_teacher(images):
        if seen is not None:
            seen.append(images)
        return encoding(v_m)

    encoders = SimpleNamespace(vision=lambda _: encoding(v), text=lambda *_: encoding(w))
    teachers = {
        objective.vision_teacher.key: vision_teacher,
        objective.text_teacher.key: lambda *_: encoding(w_m),
    }
    batch = {
        "images": "view-1",
        "images_aug": "view-2",
        "text_ids": None,
        "text_mask": None,
        "image_ids": torch.tensor(ids),
    }
    return Step(batch, encoders, teachers, global_step=global_step)


V = [[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.0, 0.4, 1.0]]
W = [[0.9, 0.1, 0.1], [0.2, 0.8, 0.0], [0.1, 0.3, 0.9]]
V_M = [[1.0, 0.1, 0.1], [0.0, 1.0, 0.2], [0.1, 0.3, 1.0]]
W_M = [[1.0, 0.0, 0.2], [0.3, 1.0, 0.1], [0.0, 0.2, 1.0]]


def test_first_step_matches_the_distillation_formula_by_hand() -> None:
    objective = identity_objective(3, temperature=0.1, alpha=0.4, queue_size=8)
    terms = objective(make_step(objective, V, W, V_M, W_M, ids=[0, 1, 1]))
    ids = [0, 1, 1]
    i2t = hand_distilled(V, V_M, W_M, ids, ids, 0.1, 0.4)
    t2i = hand_distilled(W, W_M, V_M, ids, ids, 0.1, 0.4)
    assert terms["i2t"].item() == pytest.approx(i2t, rel=1e-5)
    assert terms["t2i"].item() == pytest.approx(t2i, rel=1e-5)
    assert terms["contrastive_loss"].item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_second_step_uses_the_queued_keys_and_their_ids() -> None:
    objective = identity_objective(3, temperature=0.2, alpha=0.4, queue_size=8)
    objective(make_step(objective, V, W, V_M, W_M, ids=[0, 1, 2]))
    new_v_m = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]]
    terms = objective(make_step(objective, V, W, new_v_m, W_M, ids=[2, 3, 4]))
    keys = new_v_m + V_M  # this step's momentum images, then the queue
    key_ids = [2, 3, 4, 0, 1, 2]  # image 2 appears in both: two positives for row 0
    expected = hand_distilled(W, W_M, keys, key_ids, [2, 3, 4], 0.2, 0.4)
    assert terms["t2i"].item() == pytest.approx(expected, rel=1e-5)
    assert objective.image_queue.contents()[0].shape[0] == 6


def test_alpha_ramps_linearly_then_stays() -> None:
    objective = identity_objective(3, alpha=0.4, alpha_warmup_steps=100)
    assert objective.current_alpha(SimpleNamespace(global_step=0)) == 0.0
    assert objective.current_alpha(SimpleNamespace(global_step=25)) == pytest.approx(0.1)
    assert objective.current_alpha(SimpleNamespace(global_step=500)) == pytest.approx(0.4)


def test_alpha_zero_is_plain_itc_against_the_momentum_keys() -> None:
    objective = identity_objective(3, temperature=0.1, alpha=0.0, queue_size=4)
    terms = objective(make_step(objective, V, W, V_M, W_M, ids=[0, 1, 2]))
    assert terms["i2t"].item() == pytest.approx(
        hand_distilled(V, V_M, W_M, [0, 1, 2], [0, 1, 2], 0.1, 0.0), rel=1e-5
    )


def test_tcl_variant_feeds_the_second_view_to_the_momentum_image_encoder() -> None:
    objective = identity_objective(3, momentum_view="images_aug")
    seen: list = []
    objective(make_step(objective, V, W, V_M, W_M, ids=[0, 1, 2], seen=seen))
    assert seen == ["view-2"]
    assert "images_aug" in objective.needs


def test_gradient_flows_to_the_online_side_only() -> None:
    objective = identity_objective(3)
    objective(make_step(objective, V, W, V_M, W_M, ids=[0, 1, 2]))["contrastive_loss"].backward()
    assert objective.image_proj.weight.grad is not None
    assert all(p.grad is None for p in objective.image_proj_m.parameters())
