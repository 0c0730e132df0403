"""``model.tower_chunk_size``: the towers encode a training batch chunk by chunk, and the
step's loss and gradients are still the whole batch's (``vlp.gradient_cache``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.objectives.flamingo_tiny import tiny_data
from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.encoding import Encoding
from vlp.gradient_cache import ChunkedEncoders
from vlp.module import VLPModule
from vlp.objectives.base import Objective
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.itm import ImageTextMatching
from vlp.objectives.mlm import MaskedLanguageModeling
from vlp.objectives.tcl import TripleContrastive


def albef() -> list[Objective]:
    return [Contrastive(embed_dim=16), ImageTextMatching(), MaskedLanguageModeling()]


def tcl() -> list[Objective]:  # queues, momentum distillation, IMC, LMI, ITM, MLM
    contrastive = TripleContrastive(
        embed_dim=16, queue_size=16, momentum_view="images", momentum_dropout=False
    )
    return [contrastive, ImageTextMatching(), MaskedLanguageModeling()]


def model(objectives: list[Objective], dropout: float, freeze: tuple[str, ...] = ()) -> VLPModule:
    torch.manual_seed(0)
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT | {"hidden_dropout_prob": dropout}, max_length=16),
        objectives,
        fusion=FusionConfig(depth=2, heads=2, dropout=dropout),
        freeze=freeze,
    )


def batch_of(module: VLPModule, rows: int) -> dict:
    data = tiny_data(module, train=SyntheticScenes("train", rows, image_size=32),
                     batch_size=rows, shuffle=False)  # fmt: skip
    return next(iter(data.train_dataloader()))


def train_step(
    module: VLPModule, batch: dict, chunk_size: int | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """The step's loss and gradients on a copy of ``module`` (queues and all start alike),
    and the batch sizes its towers ran on."""
    module = copy.deepcopy(module)
    module.tower_chunk_size = chunk_size
    sizes: list[int] = []

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sizes.append(next(x for x in (*args, *kwargs.values()) if x is not None).shape[0])

    # timm's towers run forward_intermediates, not forward: watch the patch embedding
    for tower in (module.encoders.vision.model.patch_embed, module.encoders.text.model):
        tower.register_forward_pre_hook(record, with_kwargs=True)
    torch.manual_seed(1)  # dropout, hard negatives, MLM masks
    loss = module.training_step(batch, 0)
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sizes


def assert_same_gradients(got: dict, expected: dict, at_least: int = 50) -> None:
    assert got.keys() == expected.keys()
    assert len(expected) > at_least
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("objectives", [albef, tcl])
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunked_towers_give_the_whole_batch_loss_and_gradients(
    objectives: Callable[[], list[Objective]], chunk_size: int
) -> None:
    """Hard negatives, queue keys and contrastive negatives come from all 4 rows, while no
    tower pass sees more than a chunk (3 + 1 rows: an uneven last chunk)."""
    module = model(objectives(), dropout=0.0)
    batch = batch_of(module, 4)
    loss, grads, sizes = train_step(module, batch, None)
    chunked_loss, chunked_grads, chunked_sizes = train_step(module, batch, chunk_size)
    torch.testing.assert_close(chunked_loss, loss)
    assert_same_gradients(chunked_grads, grads)
    assert max(sizes) == 4 and max(chunked_sizes) == chunk_size
    assert sum(chunked_sizes) == 2 * sum(sizes)  # every row encoded twice: without, with autograd


def test_the_replayed_chunks_draw_the_dropout_of_the_first_pass() -> None:
    """With dropout on, one chunk of the whole batch draws what the plain step draws, and
    the replay with autograd must draw it again for the gradients to match."""
    module = model(albef(), dropout=0.3)
    batch = batch_of(module, 4)
    loss, grads, _ = train_step(module, batch, None)
    chunked_loss, chunked_grads, sizes = train_step(module, batch, 4)
    torch.testing.assert_close(chunked_loss, loss)
    assert_same_gradients(chunked_grads, grads)
    assert max(sizes) == 4


def test_a_frozen_tower_is_encoded_in_chunks_and_never_again() -> None:
    """LiT-style (``model.freeze: [encoders.text]``): only the learning tower is replayed."""
    module = model([Contrastive(embed_dim=16)], dropout=0.0, freeze=("encoders.text",))
    batch = batch_of(module, 4)
    loss, grads, sizes = train_step(module, batch, None)
    chunked_loss, chunked_grads, chunked_sizes = train_step(module, batch, 2)
    torch.testing.assert_close(chunked_loss, loss)
    assert not any(name.startswith("encoders.text.") for name in grads)
    assert_same_gradients(chunked_grads, grads, at_least=10)
    assert sorted(sizes) == [4, 4] and chunked_sizes == [2, 2] * 3  # vision twice, text once


@pytest.mark.parametrize("precision", ["16-mixed", "16-true"])
def test_fp16_is_refused_before_training(precision: str) -> None:
    """Lightning turns 16-mixed into bf16-mixed on the CPU, so the GPU setting is stood in."""
    module = model([Contrastive(embed_dim=16)], dropout=0.0)
    module.tower_chunk_size = 2
    module.trainer = SimpleNamespace(precision=precision)
    with pytest.raises(ValueError, match="underflow in fp16; use bf16-mixed or 32"):
        module.on_fit_start()
    module.trainer = SimpleNamespace(precision="bf16-mixed")
    module.on_fit_start()


def test_sharding_refuses_chunked_towers() -> None:
    module = model([Contrastive(embed_dim=16)], dropout=0.0)
    module.tower_chunk_size = 2
    module._device_mesh = {"tensor_parallel": SimpleNamespace(size=lambda: 1)}
    with pytest.raises(ValueError, match="tower_chunk_size: vlp's FSDP"):
        module.configure_model()


def test_a_chunk_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="tower_chunk_size must be at least 1"):
        VLPModule(
            VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
            TextEncoder(config=TINY_TEXT, max_length=16),
            [Contrastive(embed_dim=16)],
            tower_chunk_size=0,
        )


def test_a_chunked_step_runs_under_the_flop_counter() -> None:
    """The benchmark counts FLOPs with module hooks on every input that needs a gradient;
    a leaf among them would fail inside ``autograd.grad``."""
    module = model([Contrastive(embed_dim=16)], dropout=0.0)
    batch = batch_of(module, 4)
    module.tower_chunk_size = 2
    with FlopCounterMode(display=False) as counter:
        module.training_step(batch, 0).backward()
    assert counter.get_total_flops() > 0


class BatchNormTower(torch.nn.Module):
    """A tower with running statistics (BatchNorm): a ResNet's, in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)
        self.norm = torch.nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> Encoding:
        pooled = self.norm(self.linear(x))
        return Encoding(pooled=pooled, tokens=pooled[:, None])


def test_replayed_chunks_leave_running_statistics_as_the_first_pass_left_them() -> None:
    """The replay runs the same rows again: BatchNorm must count them once."""
    torch.manual_seed(0)
    tower, x = BatchNormTower(), torch.randn(4, 3)
    expected = copy.deepcopy(tower)
    with torch.no_grad():
        for chunk in x.split(2):
            expected(chunk)
    encoders = ChunkedEncoders(SimpleNamespace(vision=tower, text=BatchNormTower(), fusion=None), 2)
    loss = encoders.vision(x).pooled.pow(2).sum()
    encoders.surrogate(loss, tower.parameters()).backward()
    assert int(tower.norm.num_batches_tracked) == 2
    torch.testing.assert_close(tower.norm.running_mean, expected.norm.running_mean)
    torch.testing.assert_close(tower.norm.running_var, expected.norm.running_var)
    assert tower.linear.weight.grad is not None
