"""Fully sharded data parallel training (FSDP2), for models too big to copy to every device.

Under Lightning's ``ModelParallelStrategy`` with ``tensor_parallel_size: 1``,
:meth:`vlp.module.VLPModule.configure_model` calls :func:`shard_model`. Every
parameter is then split across the data-parallel ranks, and gathered only while it
is used:

- each layer of a stack (ViT blocks, text, fusion and decoder layers, Flamingo's
  gated layers; in the EMA teachers too) is one unit, gathered for its forward and
  its backward, then freed;
- the LightningModule itself is the root unit: it holds the rest (embeddings,
  projection heads, the ITM head), gathered for the whole training
  step, because objectives use one another's (ITM draws hard negatives from ITC's
  projections); so objectives are never units, even two of one class.

Scalar parameters (temperatures) cannot be sharded: they stay whole on every rank
and their gradients are averaged over the ranks by a hook.

Teachers are sharded like their online modules (dimension 0 over the same ranks),
so an EMA update stays elementwise on each rank's own shards.

Evaluation and prediction gather the whole model on every rank first
(:func:`gather_whole`), as DDP holds it. Save checkpoints whole
(``save_distributed_checkpoint: false``): ``vlp export`` and a DDP or one-device run
read them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

#: the LightningModule methods that run the model, as FSDP's root forward: the root unit
#: is gathered for each, and sets the layers up as its own units the first time
SHARDED_STEPS = ("training_step", "validation_step", "test_step", "predict_step")


def sharding_strategy(processes: int) -> ModelParallelStrategy:
    """The strategy this module shards under: data parallel over all ``processes``, no
    tensor parallelism, checkpoints saved whole (the config's equivalent is in the README)."""
    return ModelParallelStrategy(processes, 1, save_distributed_checkpoint=False)


def stack_layers(model: nn.Module, not_stacks: tuple[nn.Module, ...] = ()) -> Iterator[nn.Module]:
    """The layers of every stack in ``model``, deepest first (FSDP shards inner units first).

    A stack is a ``ModuleList`` or ``Sequential`` with at least two children of one
    class defined outside ``torch.nn`` (a transformer block, not a Linear of an MLP),
    other than the containers in ``not_stacks``.
    """
    found: list[nn.Module] = []
    for container in model.modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        if any(container is kept for kept in not_stacks):
            continue
        counts = Counter(type(child) for child in container)
        for child in container:
            own_class = not type(child).__module__.startswith("torch.nn")
            if (
                own_class
                and counts[type(child)] >= 2
                and next(child.parameters(), None) is not None
            ):
                found.append(child)
    depth = {module: name.count(".") for name, module in model.named_modules()}
    yield from sorted(found, key=lambda module: -depth[module])


def shard_model(model: nn.Module, mesh: DeviceMesh, not_stacks: tuple[nn.Module, ...] = ()) -> None:
    """Shard ``model`` in place over ``mesh`` (1-D: the data-parallel ranks); idempotent.
    ``not_stacks``: containers whose children stay in the root unit (the objectives)."""
    if isinstance(model, FSDPModule):
        return
    if mesh.ndim != 1:
        raise ValueError(f"shard over a 1-D data-parallel mesh, not {mesh.ndim}-D")
    scalars = {p for p in model.parameters() if p.dim() == 0}
    for layer in stack_layers(model, not_stacks):
        fully_shard(layer, mesh=mesh, ignored_params=scalars)
    fully_shard(model, mesh=mesh, ignored_params=scalars)
    for method in SHARDED_STEPS:
        register_fsdp_forward_method(model, method)
    for scalar in scalars:
        if scalar.requires_grad:
            scalar.register_post_accumulate_grad_hook(_averaging_over(mesh))


def _averaging_over(mesh: DeviceMesh) -> Callable[[Tensor], None]:
    """A gradient hook for a parameter FSDP cannot shard (a scalar such as a temperature):
    it stays whole on every rank, and its gradient is averaged over them, as DDP does."""
    group = mesh.get_group()

    def average(parameter: Tensor) -> None:
        dist.all_reduce(parameter.grad, group=group)
        parameter.grad /= dist.get_world_size(group)

    return average


def gather_whole(model: nn.Module) -> None:
    """Before evaluating: gather every weight whole on every rank, and keep it so until
    :func:`shard_again`. Evaluation needs that memory under DDP too; in exchange each
    rank runs the forward passes it needs alone (uneven shares of the split, generation
    stopping at different lengths), where sharded ranks would wait for one another."""
    for unit in _units(model):
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()


def shard_again(model: nn.Module) -> None:
    """After evaluating: back to shards, each layer gathered only while it runs."""
    for unit in _units(model):
        unit.reshard()
        if unit is not model:  # the root unit stays gathered from forward to backward
            unit.set_reshard_after_forward(True, recurse=False)


def is_shard(parameter: Tensor) -> bool:
    """Whether ``parameter`` is this rank's shard (outside its unit's forward), not whole."""
    return isinstance(parameter, DTensor)


def _units(model: nn.Module) -> list[FSDPModule]:
    return [module for module in model.modules() if isinstance(module, FSDPModule)]
