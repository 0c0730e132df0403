"""``model.activation_checkpointing``: every stack's layers run again in the backward pass,
and the loss and gradients are those of the model that keeps its activations (dropout
included: a recompute replays the layer's draws)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tests.objectives.flamingo_tiny import open_gates, tiny_data, tiny_flamingo, tiny_model
from tests.objectives.test_flamingo_ptuning import ptuned
from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.base import Objective, weighted_total
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.mlm import MaskedLanguageModeling


def albef() -> list[Objective]:
    return [Contrastive(embed_dim=16), ImageTextMatching(), MaskedLanguageModeling()]


def flamingo() -> list[Objective]:
    return [Contrastive(embed_dim=16), tiny_flamingo()]


def model(objectives: list[Objective], checkpointed: bool) -> VLPModule:
    torch.manual_seed(0)
    module = VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT | {"hidden_dropout_prob": 0.1}, max_length=16),
        objectives,
        fusion=FusionConfig(depth=2, heads=2, dropout=0.1),
        activation_checkpointing=checkpointed,
    )
    for objective in objectives:
        if hasattr(objective, "lm"):
            open_gates(objective)  # the media reach the loss
    return module


def layers_to_watch(module: VLPModule) -> dict[str, nn.Module]:
    """One layer of each stack the model has (inside it for Hugging Face's, which
    recomputes its layers' ``forward`` inside their hooks)."""
    watched = {
        "vit block": module.encoders.vision.model.blocks[0],
        "text layer": module.encoders.text.model.encoder.layer[0].attention,
    }
    if module.encoders.fusion is not None:
        watched["fusion layer"] = module.encoders.fusion.layers[0]
    for objective in module.objectives:
        if hasattr(objective, "lm"):
            watched["resampler layer"] = objective.resampler.layers[0]
            flamingo_layer = objective.lm.lm.transformer.h[0]
            watched["decoder layer"] = flamingo_layer.decoder_layer
            watched["gated block"] = flamingo_layer.xattn
    return watched


def one_step(
    objectives: Callable[[], list[Objective]], checkpointed: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Counter]:
    """The loss and gradients of one batch, and how often each watched layer ran."""
    module = model(objectives(), checkpointed)
    data = tiny_data(module, train=SyntheticScenes("train", 4, image_size=32), shuffle=False)
    batch = next(iter(data.train_dataloader()))
    runs: Counter = Counter()
    for name, layer in layers_to_watch(module).items():
        layer.register_forward_pre_hook(lambda *_, name=name: runs.update([name]))
    torch.manual_seed(1)  # dropout, hard negatives, MLM masks
    step = module.step(batch)
    loss = sum(weighted_total(o(step), o.weight) for o in module.objectives)
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads, runs


@pytest.mark.parametrize("objectives", [albef, flamingo], ids=["albef", "flamingo"])
def test_layers_are_recomputed_and_the_gradients_do_not_change(objectives) -> None:
    loss, grads, runs = one_step(objectives, checkpointed=False)
    checkpointed_loss, checkpointed_grads, checkpointed_runs = one_step(objectives, True)
    assert set(runs) == set(checkpointed_runs) and len(runs) >= 3
    for name, count in runs.items():
        assert checkpointed_runs[name] == 2 * count, name  # forward, then again in backward
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    assert checkpointed_grads.keys() == grads.keys() and len(grads) > 20
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_state_dict_names_do_not_change() -> None:
    assert model(albef(), True).state_dict().keys() == model(albef(), False).state_dict().keys()


def test_deep_prompts_refuse_it() -> None:
    """They enter the LM as a KV cache, which a recomputed layer would write twice."""
    with pytest.raises(ValueError, match="deep prompts"):
        tiny_model([ptuned(deep_prompt_length=2)], activation_checkpointing=True)
