"""Which modules FSDP shards as units: every layer of a stack, online and in the teachers,
nothing smaller (an MLP's Linears) and no objective (they use one another's weights), even
two of one class."""

from __future__ import annotations

import re

from tests.objectives.flamingo_tiny import tiny_flamingo, tiny_model
from vlp.encoders import FusionConfig
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.momentum import MomentumContrastive
from vlp.sharding import stack_layers

LAYER = re.compile(r"\.(blocks|layer|layers|h)\.\d+$")


def test_units_are_the_layers_of_every_stack_deepest_first() -> None:
    objectives = [ImageTextMatching(), ImageTextMatching(), tiny_flamingo()]
    model = tiny_model(
        [MomentumContrastive(embed_dim=8, queue_size=8), *objectives],
        fusion=FusionConfig(depth=2, heads=2),
    )
    names = {module: name for name, module in model.named_modules()}
    units = [names[module] for module in stack_layers(model, not_stacks=(model.objectives,))]

    assert all(LAYER.search(name) for name in units), units
    assert "objectives.1" not in units and "objectives.2" not in units
    assert len(units) == len(set(units))
    expected_stacks = [
        "encoders.vision.model.blocks",
        "encoders.text.model.encoder.layer",
        "encoders.fusion.layers",
        "objectives.3.lm.lm.transformer.h",
        "teachers.vision_ema_0p995_None_0.module.model.blocks",
        "teachers.text_ema_0p995_None_0.module.model.encoder.layer",
    ]
    for stack in expected_stacks:
        assert f"{stack}.0" in units and f"{stack}.1" in units, stack
    depths = [name.count(".") for name in units]
    assert depths == sorted(depths, reverse=True)
