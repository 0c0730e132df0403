"""Staged training: a model starts from the weights of an earlier vlp checkpoint.

CoOp tunes prompts of a contrastive model trained before; Flamingo reads a vision
tower pretrained with ITC. The checkpoint is read weights-only (``torch.load`` with
``weights_only=True``), so starting from it never runs code stored in it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlp.teachers import EMATeacher


def checkpoint_weights(checkpoint_path: str, prefix: str = "") -> dict[str, Tensor]:
    """The weights under ``prefix`` in a vlp (Lightning) checkpoint, with the prefix removed."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def init_from_checkpoint(
    model: nn.Module, checkpoint_path: str, prefixes: tuple[str, ...]
) -> list[str]:
    """Copy every weight of ``model`` under ``prefixes`` that the checkpoint also holds.

    Weights the checkpoint lacks (a new head, a prompt) keep their initialisation and
    are returned by name; the checkpoint's other weights (heads of objectives this model
    does not have) are ignored. A weight of another shape is an error, and so is a
    checkpoint that starts nothing.
    """
    saved = checkpoint_weights(checkpoint_path)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    found = {k: saved[k] for k in own if k in saved}
    if not found:
        raise ValueError(f"{checkpoint_path}: no weights under {', '.join(prefixes)} match")
    reshaped = [f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
                for k in found if saved[k].shape != own[k].shape]  # fmt: skip
    if reshaped:
        raise ValueError(f"{checkpoint_path}: shapes differ: {'; '.join(reshaped)}")
    model.load_state_dict(found, strict=False)
    anew = sorted(set(own) - set(found))
    restart_teachers(model, anew)
    return anew


def restart_teachers(model: nn.Module, anew: list[str]) -> None:
    """EMA copies the checkpoint lacked copy their loaded online modules again: an ITC run
    starting ALBEF has ``image_proj`` but no ``image_proj_m``, which must not stay a copy of
    the random projection."""
    for name, module in model.named_modules():
        if isinstance(module, EMATeacher) and any(k.startswith(f"{name}.module.") for k in anew):
            module.restart()
