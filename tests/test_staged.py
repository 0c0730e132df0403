"""Starting a model from another run's checkpoint (``init_from``): EMA copies follow."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.test_module import tiny_model
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.momentum import MomentumContrastive


def test_momentum_heads_the_checkpoint_lacks_start_as_copies_of_the_loaded_heads(
    tmp_path: Path,
) -> None:
    """An ITC run starts ALBEF's ITC: its projections load, and their momentum copies
    (absent from the checkpoint) must copy the loaded weights, not the random ones."""
    itc = tiny_model([Contrastive(embed_dim=8)])
    path = tmp_path / "itc.ckpt"
    torch.save({"state_dict": itc.state_dict()}, path)
    torch.manual_seed(1)  # ALBEF's own random projections differ from the ITC run's
    albef = tiny_model([MomentumContrastive(embed_dim=8, queue_size=8)], init_from=str(path))
    loaded, objective = itc.objectives[0], albef.objectives[0]
    assert torch.equal(objective.image_proj.weight, loaded.image_proj.weight)
    for online, momentum in [
        (objective.image_proj, objective.image_proj_m),
        (objective.text_proj, objective.text_proj_m),
    ]:
        assert torch.equal(momentum.module.weight, online.weight)
        assert torch.equal(momentum.module.bias, online.bias)
    vision_teacher = next(t for key, t in albef.teachers.items() if key.startswith("vision"))
    first = next(vision_teacher.module.parameters())
    assert torch.equal(first, next(itc.encoders.vision.parameters()))
