"""EMA teachers: one mechanism for ALBEF/TCL momentum encoders and data2vec teachers.

A teacher is a frozen copy of an online module, moved towards it after every
optimizer step: θ_teacher ← d·θ_teacher + (1 − d)·θ_online. Teachers have no
gradients, so DDP never reduces them, and every rank applies the same update
to the same weights, so they stay identical across ranks.

Every ``EMATeacher`` anywhere in the model (shared encoder teachers, an
objective's own momentum heads) is updated by ``VLPModule`` right after each
optimizer step; nothing updates teachers inside ``forward``.
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
    dropout: bool = False  # keep dropout on (TCL's momentum text encoder, SimCSE-style)
    shared: tuple[str, ...] = ()  # parameter prefixes copied, not averaged

    @property
    def key(self) -> str:
        """Objectives asking for the same spec share one teacher."""
        s = self.schedule
        extra = ("_dropout" if self.dropout else "") + "".join(f"_{p}" for p in self.shared)
        return f"{self.source}_ema_{s.start}_{s.end}_{s.steps}{extra}".replace(".", "p")


class EMATeacher(nn.Module):
    """A no-gradient copy of ``source``, moved towards it by :meth:`update`.

    Args:
        source: the online module; referenced, not registered, so its weights
            are not saved twice.
        schedule: the decay d per update.
        shared: parameter names (prefixes) copied from the online module instead
            of averaged, e.g. data2vec's option to share embeddings.
        dropout: keep the copy in train mode (dropout on); by default it stays
            in eval mode whatever the LightningModule does.
    """

    def __init__(
        self,
        source: nn.Module,
        schedule: DecaySchedule,
        shared: tuple[str, ...] = (),
        dropout: bool = False,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_source", source)
        self.module = copy.deepcopy(source).float().requires_grad_(False)
        self.schedule = schedule
        self.shared = shared
        self.dropout = dropout
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        # Lightning keeps every module in the mode it was built in (fit never calls
        # train()), so start as a module built for training: dropout on only if asked
        self.train()

    @classmethod
    def from_spec(cls, source: nn.Module, spec: TeacherSpec) -> EMATeacher:
        return cls(source, spec.schedule, spec.shared, spec.dropout)

    def train(self, mode: bool = True) -> EMATeacher:
        return super().train(mode and self.dropout)

    @torch.no_grad()
    def restart(self) -> None:
        """Copy the online module again, as at construction (its weights were replaced)."""
        self.module.load_state_dict(self._source.state_dict())

    @torch.no_grad()
    def update(self) -> None:
        source: nn.Module = self._source
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


def distillation_weight(alpha: float, global_step: int, warmup_steps: int) -> float:
    """α after ``global_step`` optimizer steps: linear from 0 over ``warmup_steps``, then α.

    ALBEF ramps over the first epoch (α·min(1, i/len(loader))), because the
    momentum model starts as a copy of an untrained one.
    """
    if warmup_steps <= 0:
        return alpha
    return alpha * min(1.0, global_step / warmup_steps)
