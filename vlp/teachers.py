"""EMA teachers: one mechanism for ALBEF/TCL momentum encoders and data2vec teachers.

A teacher is a frozen copy of an online module, moved towards it after every
optimizer step: θ_teacher ← d·θ_teacher + (1 − d)·θ_online. Teachers have no
gradients, so DDP never reduces them, and every rank applies the same update
to the same weights, so they stay identical across ranks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DecaySchedule:
    """The decay d after ``n`` updates: linear from ``start`` to ``end`` over ``steps``, then ``end``.

    ALBEF/TCL use a constant 0.995 (``end=None``); data2vec ramps τ0 → τe over τn updates.
    """

    start: float = 0.995
    end: float | None = None
    steps: int = 0

    def __call__(self, updates: int) -> float:
        if self.end is None or self.steps <= 0 or updates >= self.steps:
            return self.start if self.end is None else self.end
        return self.start + (self.end - self.start) * updates / self.steps


@dataclass(frozen=True)
class TeacherSpec:
    """Which online module a teacher copies (an attribute of the LightningModule) and how fast."""

    source: str
    schedule: DecaySchedule = DecaySchedule()

    @property
    def key(self) -> str:
        """Objectives asking for the same spec share one teacher."""
        s = self.schedule
        return f"{self.source}_ema_{s.start}_{s.end}_{s.steps}".replace(".", "p")


class EMATeacher(nn.Module):
    """A no-gradient, eval-mode copy of ``source`` updated by :meth:`update`.

    Args:
        shared: parameter names (prefixes) copied from the online module instead
            of averaged, e.g. data2vec's option to share embeddings.
    """

    def __init__(
        self, source: nn.Module, schedule: DecaySchedule, shared: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.module = copy.deepcopy(source).float().eval().requires_grad_(False)
        self.schedule = schedule
        self.shared = shared
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMATeacher:
        """Stay in eval mode whatever the LightningModule does (no dropout in targets)."""
        return super().train(False)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        decay = self.schedule(int(self.updates))
        online = dict(source.named_parameters())
        for name, teacher_param in self.module.named_parameters():
            weight = online[name].detach().float()
            if self.shared and name.startswith(self.shared):
                teacher_param.copy_(weight)
            else:
                teacher_param.lerp_(weight, 1.0 - decay)
        online_buffers = dict(source.named_buffers())
        for name, buffer in self.module.named_buffers():
            buffer.copy_(online_buffers[name])
        self.updates += 1

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
