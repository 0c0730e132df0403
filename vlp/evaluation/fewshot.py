"""Few-shot prompts: k demonstrations from a support set, then the query (Flamingo §3).

A prompt is k demonstrations, each an image tag with its text and ``<|endofchunk|>``,
followed by the query's image tag and its unfinished text, in the layout of the
training documents (``<|endofchunk|><image>`` with no separator between chunks):

    <image>a red circle<|endofchunk|><image>a blue square<|endofchunk|><image>

Demonstrations come from a support set drawn from the training split, either at
random (seeded by the query, so a query gets the same ones on any rank) or by RICES
(Yang et al. 2022): the k support images most similar to the query in the model's own
image embedding, ordered so the most similar sits next to the query. Zero-shot prompts
follow Flamingo and OpenFlamingo: ``text_only_demos`` demonstrations without their
images set the format, and only the query's image is seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import IterableDataset

from vlp.datamodules.media_text import ClipSource, MediaTextRecord, MediaTextSource
from vlp.datamodules.records import ImageTextRecord
from vlp.datamodules.samples import QUESTION_ANSWER
from vlp.flamingo.generation import Decoding
from vlp.flamingo.tokens import END_OF_CHUNK, IMAGE, literal_fields


@dataclass(frozen=True)
class Template:
    """A task's demonstration and query text; ``{field}`` slots are filled per example."""

    demo: str
    query: str


CAPTION = Template(demo=f"{IMAGE}{{caption}}{END_OF_CHUNK}", query=IMAGE)
VQA = Template(
    demo=f"{IMAGE}{QUESTION_ANSWER}{END_OF_CHUNK}",
    query=IMAGE + QUESTION_ANSWER.format(question="{question}", answer=""),
)


@dataclass(frozen=True)
class FewShotConfig:
    """Few-shot captioning and VQA of a generating objective at validation and test.

    Args:
        shots: the numbers of demonstrations k evaluated (OpenFlamingo: 0, 4, 8, 16, 32).
        max_samples: images of the evaluation split captioned and asked about per k,
            all ranks together (each rank takes its share); None: every image.
        support_size: images of the training split the demonstrations are drawn from
            (OpenFlamingo: a query set of 2048).
        rices: pick the most similar support images instead of random ones.
        text_only_demos: demonstrations without images in zero-shot prompts (Flamingo: 2).
        bare_zero_shot: also score zero-shot prompts of the query alone, logged as
            ``{caption,vqa}/..._0shot_bare``: an LM trained from scratch on documents never
            saw text before a first image, so text-only demonstrations can mislead it.
        seed: fixes the support set, the random demonstrations and each image's question.
        caption, vqa: decoding of captions and of answers.
    """

    shots: tuple[int, ...] = (0, 4, 8)
    max_samples: int | None = None
    support_size: int = 2048
    rices: bool = False
    text_only_demos: int = 2
    bare_zero_shot: bool = False
    seed: int = 0
    caption: Decoding = Decoding(max_new_tokens=20)
    vqa: Decoding = Decoding(max_new_tokens=5)


def few_shot_prompt(
    template: Template,
    demos: Sequence[Mapping[str, str]],
    query: Mapping[str, str],
    with_images: bool = True,
) -> str:
    """The demonstrations then the query; ``with_images=False`` drops the demos' image tags.
    Tags written in the demos' and the query's fields stay text, as in training."""
    shown = [template.demo.format(**literal_fields(demo)) for demo in demos]
    if not with_images:
        shown = [text.replace(IMAGE, "") for text in shown]
    return "".join(shown) + template.query.format(**literal_fields(query))


def random_demos(pool: int, k: int, seed: int, query_id: int) -> list[int]:
    """k distinct indices into a pool of ``pool`` examples, fixed by (seed, query)."""
    return random.Random(f"{seed}:{query_id}").sample(range(pool), min(k, pool))


def rices_demos(queries: Tensor, pool: Tensor, k: int) -> Tensor:
    """[Q, k] indices of the k pool rows most cosine-similar to each query [Q, D], most
    similar last (adjacent to the query in the prompt)."""
    similarity = F.normalize(queries, dim=-1) @ F.normalize(pool, dim=-1).T
    return similarity.topk(min(k, len(pool)), dim=-1).indices.flip(-1)


def pick(options: Sequence[Any], seed: int, key: int | str) -> Any:
    """One of ``options``, fixed by (seed, key): e.g. the question asked about an image."""
    return options[random.Random(f"{seed}:{key}:pick").randrange(len(options))]


def support_records(datamodule: Any, size: int, seed: int) -> list[ImageTextRecord]:
    """Up to ``size`` image–text records of the training data, the same on every rank.

    A seeded random subset of a map-style source, the first ``size`` records of a stream.
    Unreadable records are left out.
    """
    records = _sample(_train_source(datamodule, clips=False), size, seed)
    return [r for r in records if isinstance(r, ImageTextRecord)]


def support_clips(datamodule: Any, size: int, seed: int) -> list[MediaTextRecord]:
    """Up to ``size`` captioned clips of the training data, drawn as :func:`support_records`
    draws images."""
    records = _sample(_train_source(datamodule, clips=True), size, seed)
    return [r for r in records if isinstance(r, MediaTextRecord)]


def _sample(source: Any, size: int, seed: int) -> list[Any]:
    if source is None:
        return []
    if isinstance(source, IterableDataset):
        return _first(iter(source), size)
    indices = random.Random(seed).sample(range(len(source)), min(size, len(source)))
    return [source[i] for i in sorted(indices)]


def _train_source(datamodule: Any, clips: bool) -> Any:
    """What the model trains on: ``data.train`` (its k-shot subset under ``data.kshot``,
    so in-context demonstrations show the same images a prompt was tuned on), or the
    first image–text part (``clips``: the first clip part) of ``data.mixture``; None
    without a data module or without such data."""
    if datamodule is None:
        return None

    def wanted(source: Any) -> bool:
        return isinstance(source, ClipSource) if clips else not isinstance(source, MediaTextSource)

    source = datamodule.train_source()
    if source is not None:
        return source if wanted(source) else None
    return next((part.source for part in datamodule.mixture if wanted(part.source)), None)


def _first(records: Iterator[Any], size: int) -> list[Any]:
    return [record for _, record in zip(range(size), records, strict=False)]


def stack_visual(support: Tensor, demos: Tensor, query: Tensor) -> Tensor:
    """Images of each prompt in order: [B, k] demo indices into ``support`` [S, n, D] and
    ``query`` [B, n, D] → [B, k + 1, n, D]."""
    return torch.cat([support[demos], query[:, None]], dim=1)
