"""``model.compile_layers``: every layer of the towers and their teachers is compiled, and
one training step gives the eager model's loss and gradients."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.utils import counters

from tests.objectives.flamingo_tiny import tiny_data
from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.export import build_model
from vlp.module import VLPModule
from vlp.objectives.base import weighted_total
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.mlm import MaskedLanguageModeling
from vlp.objectives.momentum import MomentumContrastive
from vlp.sharding import stack_layers


def albef(compiled: bool, checkpointed: bool = False) -> VLPModule:
    """ALBEF with its momentum teachers, without dropout (compiled code draws its own)."""
    torch.manual_seed(0)
    objectives = [
        MomentumContrastive(embed_dim=16, queue_size=8),
        ImageTextMatching(),
        MaskedLanguageModeling(),
    ]
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        objectives,
        fusion=FusionConfig(depth=2, heads=2, dropout=0.0),
        activation_checkpointing=checkpointed,
        compile_layers=compiled,
    )


def one_step(module: VLPModule) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    data = tiny_data(module, train=SyntheticScenes("train", 4, image_size=32), shuffle=False)
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(1)  # hard negatives, MLM masks
    step = module.step(batch)
    loss = sum(weighted_total(o(step), o.weight) for o in module.objectives)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def is_compiled(layer: torch.nn.Module) -> bool:
    return getattr(layer, "_compiled_call_impl", None) is not None


def test_every_tower_and_teacher_layer_is_compiled_and_nothing_else() -> None:
    module = albef(compiled=True)
    layers = [*stack_layers(module.encoders), *stack_layers(module.teachers)]
    # 2 ViT blocks, 2 text layers, 2 fusion layers; the momentum ViT and text tower
    assert len(layers) == 10 and all(is_compiled(layer) for layer in layers)
    compiled = [name for name, m in module.named_modules() if is_compiled(m)]
    assert len(compiled) == len(layers)
    assert albef(compiled=False).state_dict().keys() == module.state_dict().keys()


@pytest.mark.parametrize("checkpointed", [False, True], ids=["keep", "recompute"])
def test_a_compiled_step_gives_the_eager_loss_and_gradients(checkpointed: bool) -> None:
    loss, grads = one_step(albef(compiled=False))
    torch._dynamo.reset()
    counters.clear()
    compiled_loss, compiled_grads = one_step(albef(compiled=True, checkpointed=checkpointed))
    # dynamo traced graphs for the ViT block, the text layer and the fusion layer at least
    assert counters["stats"]["unique_graphs"] >= 3
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-5)
    assert compiled_grads.keys() == grads.keys() and len(grads) > 20
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_sharding_refuses_compiled_layers() -> None:
    module = albef(compiled=True)
    mesh = {"tensor_parallel": SimpleNamespace(size=lambda: 1), "data_parallel": None}
    module._device_mesh = mesh
    with pytest.raises(ValueError, match="compile_layers"):
        module.configure_model()


def test_export_builds_the_model_eager() -> None:
    """The exporters trace the model; a checkpoint trained compiled exports as any other."""
    config = {
        "model": {
            "vision_encoder": {
                "class_path": "vlp.encoders.VisionEncoder",
                "init_args": {"name": "vit_tiny_patch16_224", "image_size": 32,
                              "model_kwargs": TINY_VISION},
            },
            "text_encoder": {
                "class_path": "vlp.encoders.TextEncoder",
                "init_args": {"config": TINY_TEXT, "max_length": 16},
            },
            "objectives": [
                {"class_path": "vlp.objectives.contrastive.Contrastive", "init_args": {}}
            ],
            "compile_layers": True,
        }
    }  # fmt: skip
    model = build_model(config)
    assert not model.compile_layers
    assert not any(is_compiled(m) for m in model.modules())
