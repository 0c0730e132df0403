"""Gradient caching: the whole batch's losses with only a chunk's tower activations in memory.

Contrastive objectives draw their negatives from the batch, so accumulating gradients
over small batches shrinks their pool (``shared/specs/frameworks.md`` §4, #5). Gradient
caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"; open_clip's ``--accum-freq``) keeps the batch whole and splits only the
towers' work:

1. the vision and text towers encode the batch chunk by chunk without autograd; their
   outputs, concatenated, become leaves ``e``;
2. the objectives compute the loss L over the whole batch from ``e`` (every negative, the
   whole batch's hard negatives), giving ∂L/∂e and the gradients of every parameter the
   objectives use directly (projections, τ, the fusion encoder, tied embeddings);
3. each chunk is encoded again, with autograd and the random draws (dropout) of step 1,
   and ∂L/∂e of its rows is pulled back into the towers' parameters.

The step returns L + Σ_p ⟨p, g_p⟩ − (the same, detached), with the gradients g_p
detached: its value is the loss and Lightning's usual backward puts exactly g_p into
``p.grad``, through DDP's all-reduce, gradient clipping
and the precision plugin. Memory: one chunk's tower activations, plus the whole batch's
tower outputs (pooled and tokens; the towers' per-layer hidden states are not kept, only
the EMA teachers' are read) and one extra copy of the gradients. Objectives' own layers
(fusion encoder, Flamingo's LM) still run on the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vlp.encoders import Encoders
from vlp.encoding import Encoding


@dataclass
class _Chunk:
    inputs: tuple[object, ...]
    rng: tuple[Tensor, Tensor | None]  # CPU and current CUDA generator states before it ran
    rows: slice


@dataclass
class _Call:
    chunks: list[_Chunk]
    leaves: tuple[Tensor, Tensor]  # pooled and tokens of every row: ∂L/∂e collects in .grad


def _rng_state() -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


@contextmanager
def _replayed_rng(state: tuple[Tensor, Tensor | None]) -> Iterator[None]:
    """Run the block from the generator states of ``state``, restoring the current ones after."""
    devices = [torch.cuda.current_device()] if state[1] is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1])
        yield


class ChunkedTower:
    """A tower that encodes ``chunk_size`` rows at a time without autograd, and records how,
    to replay each chunk with autograd later (a frozen tower is never replayed). Everything
    else is the tower's own."""

    def __init__(self, tower: nn.Module, chunk_size: int) -> None:
        self.tower = tower
        self.chunk_size = chunk_size
        self.calls: list[_Call] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.tower, name)

    def __call__(self, *inputs: object) -> Encoding:
        rows = next(x.shape[0] for x in inputs if isinstance(x, Tensor))
        chunks, outputs = [], []
        for start in range(0, rows, self.chunk_size):
            index = slice(start, min(start + self.chunk_size, rows))
            part = tuple(x[index] if _is_batched(x, rows) else x for x in inputs)
            chunks.append(_Chunk(part, _rng_state(), index))
            with torch.no_grad():
                outputs.append(self.tower(*part))
        pooled = torch.cat([o.pooled for o in outputs])
        tokens = torch.cat([o.tokens for o in outputs])
        masks = [o.mask for o in outputs]
        if any(p.requires_grad for p in self.tower.parameters()):  # not a frozen tower
            leaves = (pooled.requires_grad_(), tokens.requires_grad_())
            self.calls.append(_Call(chunks, leaves))
            # the objectives get views: module hooks on leaf inputs (FlopCounterMode's
            # module tracker) fail inside autograd.grad
            pooled, tokens = (leaf.view_as(leaf) for leaf in leaves)
        return Encoding(
            pooled=pooled, tokens=tokens, mask=None if masks[0] is None else torch.cat(masks)
        )

    def replay(self, parameters: list[nn.Parameter], grads: list[Tensor | None]) -> None:
        """Encode every recorded chunk again with autograd and add the parameters' share of
        ∂L/∂(its outputs) to ``grads``. The tower's buffers (BatchNorm's running statistics)
        keep the first pass's update: a replay sees the same rows again, not more data."""
        with torch.no_grad():
            first_pass = [buffer.clone() for buffer in self.tower.buffers()]
        self._replay(parameters, grads)
        with torch.no_grad():
            for buffer, kept in zip(self.tower.buffers(), first_pass, strict=True):
                buffer.copy_(kept)

    def _replay(self, parameters: list[nn.Parameter], grads: list[Tensor | None]) -> None:
        for call in self.calls:
            leaves = call.leaves
            if all(leaf.grad is None for leaf in leaves):
                continue
            for chunk in call.chunks:
                with _replayed_rng(chunk.rng):
                    encoded = self.tower(*chunk.inputs)
                pairs = [(out, leaf.grad[chunk.rows])
                         for out, leaf in zip((encoded.pooled, encoded.tokens), leaves, strict=True)
                         if leaf.grad is not None]  # fmt: skip
                outputs, upstream = zip(*pairs, strict=True)
                shares = torch.autograd.grad(outputs, parameters, upstream, allow_unused=True)
                for i, share in enumerate(shares):
                    if share is not None:
                        grads[i] = share if grads[i] is None else grads[i] + share


def _is_batched(x: object, rows: int) -> bool:
    return isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == rows


class ChunkedEncoders:
    """What a step's objectives see in place of :class:`Encoders` under gradient caching:
    the same towers, encoding in chunks, and the same fusion encoder."""

    def __init__(self, encoders: Encoders, chunk_size: int) -> None:
        self.vision = ChunkedTower(encoders.vision, chunk_size)
        self.text = ChunkedTower(encoders.text, chunk_size)
        self.fusion = encoders.fusion

    def surrogate(self, loss: Tensor, parameters: Iterable[nn.Parameter]) -> Tensor:
        """A tensor equal to ``loss`` whose backward gives the trainable parameters exactly
        g_p = ∂loss/∂p, through the leaves and the chunk replays."""
        trainable = [p for p in parameters if p.requires_grad]
        leaves = [leaf for tower in (self.vision, self.text) for call in tower.calls
                  for leaf in call.leaves]  # fmt: skip
        direct = torch.autograd.grad(loss, leaves + trainable, allow_unused=True)
        for leaf, grad in zip(leaves, direct[: len(leaves)], strict=True):
            leaf.grad = grad
        grads = list(direct[len(leaves) :])
        for tower in (self.vision, self.text):
            tower.replay(trainable, grads)
        terms = [(p * g).sum() for p, g in zip(trainable, grads, strict=True)
                 if g is not None]  # fmt: skip
        if not terms:
            raise ValueError("the loss depends on no trainable parameter")
        pulled = sum(terms[1:], terms[0])
        return loss.detach() + (pulled - pulled.detach())
