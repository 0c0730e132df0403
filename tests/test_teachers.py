"""The EMA teacher mechanism on its own: formula, schedule, no gradients, sharing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlp.teachers import DecaySchedule, EMATeacher, TeacherSpec


def test_constant_and_linear_schedules() -> None:
    assert DecaySchedule(0.995)(0) == 0.995 and DecaySchedule(0.995)(10**6) == 0.995
    ramp = DecaySchedule(start=0.999, end=0.9999, steps=100)
    assert ramp(0) == pytest.approx(0.999)
    assert ramp(50) == pytest.approx(0.99945)
    assert ramp(100) == pytest.approx(0.9999) and ramp(5000) == pytest.approx(0.9999)


def test_update_follows_the_ema_formula_by_hand() -> None:
    online = nn.Linear(3, 2)
    teacher = EMATeacher(online, DecaySchedule(start=0.5, end=0.9, steps=2))
    assert torch.equal(teacher.module.weight, online.weight)  # equal at step 0
    expected = online.weight.detach().clone()
    for decay in (0.5, 0.7, 0.9, 0.9):
        with torch.no_grad():
            online.weight.add_(torch.randn_like(online.weight))
        expected = decay * expected + (1 - decay) * online.weight.detach()
        teacher.update()
    assert torch.allclose(teacher.module.weight, expected, atol=1e-6)
    assert int(teacher.updates) == 4


def test_teacher_has_no_gradient_and_stays_in_eval_mode() -> None:
    online = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    teacher = EMATeacher(online, DecaySchedule())
    teacher.train()
    assert not teacher.module.training
    out = teacher(torch.randn(4, 3))
    assert not out.requires_grad
    assert all(not p.requires_grad for p in teacher.parameters())


def test_dropout_option_keeps_the_copy_in_train_mode() -> None:
    teacher = EMATeacher(nn.Dropout(0.5), DecaySchedule(), dropout=True)
    assert teacher.module.training  # as built: Lightning never calls train() at fit start
    teacher.eval()
    teacher.train()
    assert teacher.module.training
    teacher.eval()
    assert not teacher.module.training


def test_source_is_not_saved_twice() -> None:
    teacher = EMATeacher(nn.Linear(2, 2), DecaySchedule())
    assert set(teacher.state_dict()) == {"module.weight", "module.bias", "updates"}


def test_shared_parameters_are_copied_not_averaged() -> None:
    online = nn.Sequential(nn.Embedding(5, 2), nn.Linear(2, 2))
    teacher = EMATeacher(online, DecaySchedule(0.9), shared=("0.",))
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    teacher.update()
    assert torch.equal(teacher.module[0].weight, online[0].weight)
    assert not torch.equal(teacher.module[1].weight, online[1].weight)


def test_teacher_state_is_in_the_state_dict() -> None:
    teacher = EMATeacher(nn.Linear(2, 2), DecaySchedule())
    teacher.update()
    state = teacher.state_dict()
    assert "module.weight" in state and int(state["updates"]) == 1


def test_specs_with_the_same_source_and_schedule_share_a_key() -> None:
    a = TeacherSpec("vision", DecaySchedule(0.995))
    assert a.key == TeacherSpec("vision", DecaySchedule(0.995)).key
    assert a.key != TeacherSpec("text", DecaySchedule(0.995)).key
    assert a.key != TeacherSpec("vision", DecaySchedule(0.99)).key
    assert a.key != TeacherSpec("vision", DecaySchedule(0.995), dropout=True).key
