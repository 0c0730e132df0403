"""The contract between the training step and a pretraining objective."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from vlp.teachers import TeacherSpec

if TYPE_CHECKING:
    from vlp.encoders import Encoders
    from vlp.step import Step

LOSS_SUFFIX = "_loss"


class Objective(nn.Module):
    """A pretraining objective: owns its heads, reads shared encodings, returns named terms.

    ``forward`` returns a dict; terms whose name ends in ``_loss`` are summed and
    multiplied by ``weight`` into the training loss, the rest are only logged.

    Args:
        weight: this objective's weight in the total loss.
    """

    #: batch fields this objective reads (the data module prepares only these),
    #: plus "fusion" when it needs the fusion encoder (the module builds it only then)
    needs: ClassVar[frozenset[str]] = frozenset({"images", "text"})
    #: short name used as the logging prefix
    name: ClassVar[str] = "objective"
    #: the objective adapts a frozen model (prompt tuning, e.g. CoOp): the module freezes
    #: every weight outside such objectives' ``prompt_modules``
    prompt_only: ClassVar[bool] = False
    #: its negatives come from the step's batch (gathered over ranks), so accumulating
    #: gradients over several batches does not enlarge their pool
    batch_negatives: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def bind(self, encoders: Encoders) -> None:
        """Build the parameters that depend on encoder widths (called once by the module)."""

    def checkpoint_activations(self) -> None:
        """Recompute the activations of this objective's own layer stacks in the backward
        pass (``model.activation_checkpointing``); most objectives have none."""

    def prompt_modules(self) -> tuple[nn.Module, ...]:
        """What a ``prompt_only`` objective trains: all of it, unless it also holds frozen
        parts (a P-tuned Flamingo keeps its stage-1 LM inside)."""
        return (self,)

    def after_optimizer_step(self) -> None:
        """Runs after every optimizer step that updated the weights (e.g. to clamp one)."""

    def teacher_specs(self) -> tuple[TeacherSpec, ...]:
        """EMA teachers this objective reads through ``step.teacher``."""
        return ()

    def forward(self, step: Step) -> dict[str, Tensor]:
        raise NotImplementedError


def weighted_total(terms: dict[str, Tensor], weight: float) -> Tensor:
    """``weight · Σ`` of the ``*_loss`` terms."""
    losses = [value for key, value in terms.items() if key.endswith(LOSS_SUFFIX)]
    if not losses:
        raise ValueError(f"objective returned no '*{LOSS_SUFFIX}' term: {sorted(terms)}")
    return weight * sum(losses[1:], losses[0])
