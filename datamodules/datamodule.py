"""The data module: any sources per split, transformed, tokenized, split across ranks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import CombinedLoader, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from vlp.datamodules.clip_retrieval import ClipRetrievalCollate, to_clip_sample
from vlp.datamodules.collate import BatchMasks, Collate, MaskRecipe
from vlp.datamodules.kshot import KShot
from vlp.datamodules.lm_text import LMTokenize
from vlp.datamodules.lockstep import LockstepLoader
from vlp.datamodules.media_text import (
    MediaTextCollate,
    MediaTextSource,
    as_media_samples,
    to_media_sample,
)
from vlp.datamodules.mixture import DatasetTag, MixturePart, TaggedCollate
from vlp.datamodules.samples import Views, Visit, as_samples
from vlp.datamodules.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    Augment,
    SecondView,
    eval_transform,
    second_view_transform,
    train_transform,
)
from vlp.seeding import mix

PROVIDES = frozenset({"images", "text", "images_aug", "lm_text", "labels"})
MODEL_SIDE = frozenset({"fusion"})  # needs the model, not the data, satisfies


class EvalShardSampler(DistributedSampler):
    """Rank r takes items r, r+W, r+2W, ...: every item exactly once, no padding.

    Lightning's default distributed sampler repeats items to even out ranks,
    which would count images twice in retrieval metrics. A rank with no item
    (a split smaller than the world) yields one ``None`` instead, loaded as
    :class:`~vlp.datamodules.samples.NoItem`: Lightning would skip a rank's
    zero-length evaluation loop, epoch end and metric gathers included, and
    the other ranks would wait for it forever.
    """

    def __iter__(self) -> Iterator[int | None]:
        return iter(self._share() or [None])

    def __len__(self) -> int:
        return max(len(self._share()), 1)

    def _share(self) -> range:
        return range(self.rank, len(self.dataset), self.num_replicas)


class ResumableSampler(DistributedSampler):
    """The training sampler, able to start an epoch part-way through.

    A run resumed from a mid-epoch checkpoint must see the rest of that epoch's
    permutation, not replay its start: the first pass over epoch ``resume_epoch``
    drops this rank's first ``skip`` indices. Later passes in that epoch (a mixture's
    shorter datasets restart until the longest is done) start from the beginning, as
    they did in the uninterrupted run. ``len`` stays the full epoch, which is what
    Lightning's restored loop counters count against.

    Indices come as :class:`Visit`, keyed by (seed, epoch, pass, index): an item's random
    draws differ from visit to visit, and a resumed pass replays them.
    """

    def __init__(self, *args: Any, resume_epoch: int = -1, skip: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_epoch = resume_epoch
        self.skip = skip
        self.resume_pass = 0
        self._resumed = False
        self._passes: tuple[int, int] = (-1, 0)  # (epoch, passes started in it)

    def resume_after(self, steps: int, batch_size: int, drop_last: bool) -> None:
        """Resume after ``steps`` training steps of ``resume_epoch``, each of which took one
        batch of ``batch_size`` from this sampler's loader, passing over it again when done."""
        per_pass = len(self) // batch_size if drop_last else -(-len(self) // batch_size)
        self.skip = (steps % per_pass) * batch_size
        self.resume_pass = steps // per_pass

    def __iter__(self) -> Iterator[Visit]:
        resuming = self.epoch == self.resume_epoch and not self._resumed
        if resuming:
            self._resumed = True
            self._passes = (self.epoch, self.resume_pass)
        elif self._passes[0] != self.epoch:
            self._passes = (self.epoch, 0)
        pass_ = self._passes[1]
        self._passes = (self.epoch, pass_ + 1)
        visits = [Visit(i, mix(self.seed, self.epoch, pass_, i)) for i in super().__iter__()]
        return iter(visits[self.skip :] if resuming else visits)


def drops_last_batch(per_rank: int, batch_size: int) -> bool:
    """Training drops a last partial batch (equal contrastive batches every step), unless
    the data cannot fill one: a k-shot set of 6 images then trains as one batch of 6 per
    epoch, as Dassl (CoOp's toolbox) does, instead of as no batch at all."""
    if per_rank == 0:
        raise ValueError("data.train: no training sample for this rank (fewer samples than ranks)")
    if per_rank < batch_size:
        rank_zero_warn(
            f"data.train: {per_rank} samples per rank, fewer than data.batch_size={batch_size}; "
            f"every epoch is one batch of {per_rank}"
        )
    return per_rank >= batch_size


class VLPDataModule(LightningDataModule):
    """Image–text data for every split.

    Args:
        train, val, test, predict: sources yielding ``ImageTextRecord`` (the
            synthetic scenes, a JSONL/CSV manifest, COCO/Karpathy JSON, a
            Hugging Face dataset on disk, WebDataset shards).
        batch_size: images per rank per step.
        eval_batch_size: images per evaluation batch (defaults to ``batch_size``).
        num_workers: data loader processes per rank.
        image_size: side of the square images the model sees.
        augment: training augmentation.
        second_view: augmentation of the second view ``images_aug``, built only
            when an objective needs it (TCL's IMC and momentum branch).
        shuffle: shuffle map-style training data each epoch.
        seed: the shuffling seed (the same on every rank, so ranks split one permutation).
        mean, std: image normalisation (CLIP's by default).
        classes_file: JSON with ``class_names`` and ``prompt_templates`` for
            zero-shot evaluation (``vlp data`` writes one); otherwise they come
            from an evaluation source that has them (the in-memory synthetic scenes).
        tokenize: linked from the model by the CLI, so captions are tokenized
            the way the text encoder expects.
        lm_tokenize: linked from the model by the CLI when an objective reads
            ``lm_text`` (Flamingo): training captions and documents in the LM's tokenizer.
        mixture: train on several datasets at once, one batch of each per step, each
            loss weighted by its λ (``vlp.datamodules.mixture``); replaces ``train``.
        kshot: train on ``k`` labelled images per class of ``train``, drawn reproducibly
            (``{k: 16, seed: 1}``; CoOp's few-shot protocol).
        needs: the batch fields the model's objectives read, linked from the
            model by the CLI; extra views are built only when listed here, and
            mask recipes (``vlp.masking.BlockMasking``/``SpanMasking``) listed
            here are drawn for every training batch.
    """

    #: (epoch, samples this rank had trained on in it) at the checkpoint being resumed
    resume_position: tuple[int, int] = (-1, 0)

    def __init__(
        self,
        train: Dataset | None = None,
        val: Dataset | None = None,
        test: Dataset | None = None,
        predict: Dataset | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        image_size: int = 64,
        augment: Augment = Augment(),
        second_view: SecondView = SecondView(),
        shuffle: bool = True,
        seed: int = 0,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        classes_file: str | None = None,
        tokenize: Callable[[list[str]], dict[str, Tensor]] | None = None,
        needs: frozenset[str | MaskRecipe] = frozenset({"images", "text"}),
        lm_tokenize: LMTokenize | None = None,
        mixture: list[MixturePart] | None = None,
        kshot: KShot | None = None,
    ) -> None:
        super().__init__()
        if train is not None and mixture:
            raise ValueError("set data.train or data.mixture, not both")
        if kshot is not None and train is None:
            raise ValueError("data.kshot draws from data.train: set it")
        self.kshot = kshot
        self._kshot_subset: Dataset | None = None
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.mixture = list(mixture or [])
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.train_transform = train_transform(image_size, augment, mean, std)
        self.second_view_transform = second_view_transform(image_size, second_view, mean, std)
        self.needs = frozenset(needs)
        self.eval_transform = eval_transform(image_size, mean, std)
        self.tokenize = tokenize
        self.lm_tokenize = lm_tokenize
        self.classes = json.loads(Path(classes_file).read_text()) if classes_file else {}
        self._lockstep_loaders: list[LockstepLoader] = []

    @property
    def class_names(self) -> list[str] | None:
        """Zero-shot class names, from the first evaluation source that has them."""
        return self._eval_source_attr("class_names")

    @property
    def prompt_templates(self) -> list[str] | None:
        return self._eval_source_attr("prompt_templates")

    def _eval_source_attr(self, name: str) -> list[str] | None:
        if name in self.classes:
            return list(self.classes[name])
        for split in ("val", "test", "predict"):
            value = getattr(self.sources[split], name, None)
            if value:
                return list(value)
        return None

    def check_needs(self, needs: frozenset[str | MaskRecipe]) -> None:
        """Fail at start-up, not mid-epoch, when an objective needs a field we cannot build.

        Mask recipes always can be built; a mask field named without its recipe cannot.
        """
        missing = {n for n in needs if isinstance(n, str)} - PROVIDES - MODEL_SIDE
        if missing:
            raise ValueError(
                f"objectives need batch fields {sorted(missing)}; data provides {sorted(PROVIDES)}"
            )

    def _loader(self, split: str, train: bool) -> DataLoader:
        source = self.train_source() if split == "train" else self.sources[split]
        if source is None:
            raise ValueError(f"data.{split} is not set: give a source for the {split} split")
        return self._source_loader(
            source, train, self.batch_size if train else self.eval_batch_size
        )

    def train_source(self) -> Dataset | None:
        """``train``, or its k-shot subset (drawn once: it reads every record's label)."""
        if self.kshot is None:
            return self.sources["train"]
        if self._kshot_subset is None:
            self._kshot_subset = self.kshot.subset(self.sources["train"])
        return self._kshot_subset

    def _source_loader(
        self, source: Dataset, train: bool, batch_size: int, tag: DatasetTag | None = None
    ) -> DataLoader:
        if self.tokenize is None:
            raise ValueError("data.tokenize is not set (the CLI links it from the model)")
        dataset, collate = self._samples(source, train)
        options = {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "collate_fn": collate if tag is None else TaggedCollate(collate, tag),
        }
        if not isinstance(dataset, IterableDataset):
            sampler = self._sampler(dataset, train)
            drop_last = train and drops_last_batch(len(sampler), batch_size)
            if train:
                # a training step (batch_idx) takes one batch of each dataset
                steps = self.resume_position[1] // self.batch_size
                sampler.resume_after(steps, batch_size, drop_last)
            return DataLoader(
                dataset,
                sampler=sampler,
                drop_last=drop_last,
                persistent_workers=self.num_workers > 0,
                **options,
            )
        if not train:
            return DataLoader(dataset, persistent_workers=self.num_workers > 0, **options)
        loader = LockstepLoader(
            dataset,
            device=self._device(),
            epoch=self._current_epoch,
            persistent_workers=False,  # workers made anew each epoch see its shard order
            **options,
        )
        if self.resume_position[0] >= 0:
            loader.resume_after(self.resume_position[0], self.resume_position[1] // self.batch_size)
        self._lockstep_loaders.append(loader)
        return loader

    def _device(self) -> torch.device:
        return torch.device("cpu") if self.trainer is None else self.trainer.strategy.root_device

    def _current_epoch(self) -> int:
        return 0 if self.trainer is None else self.trainer.current_epoch

    @property
    def dropped_batches(self) -> int | None:
        """Streamed training batches this rank dropped so that all ranks end epochs together
        (:mod:`vlp.datamodules.lockstep`) in the current epoch; None without streaming."""
        if not self._lockstep_loaders:
            return None
        return sum(loader.dropped_batches for loader in self._lockstep_loaders)

    @property
    def dropped_tail_samples(self) -> int | None:
        """Streamed training samples this rank dropped in the current epoch because they
        ended a data loader worker's share in a batch shorter than the others; None without
        streaming."""
        if not self._lockstep_loaders:
            return None
        return sum(loader.dropped_tail_samples for loader in self._lockstep_loaders)

    def _samples(self, source: Dataset, train: bool) -> tuple[Dataset, Callable]:
        """The samples of ``source`` and how to batch them; LM fields only in training.

        Documents and clips train the LM objective; clips are evaluated by retrieval.
        """
        lm_tokenize = self._lm_tokenize() if train and "lm_text" in self.needs else None
        if isinstance(source, MediaTextSource) and not train:
            clips = partial(to_clip_sample, transform=self.eval_transform)
            return as_media_samples(source, clips), ClipRetrievalCollate(self.tokenize)
        if isinstance(source, MediaTextSource):
            if lm_tokenize is None:
                raise ValueError("documents and clips train only language-model objectives")
            media = partial(to_media_sample, transform=self.eval_transform)
            return as_media_samples(source, media), MediaTextCollate(lm_tokenize)
        if train:
            extra = {"images_aug": self.second_view_transform} if "images_aug" in self.needs else {}
            views = Views(self.train_transform, extra)
        else:
            views = Views(self.eval_transform)
        dataset = as_samples(source, views, all_captions=not train, seed=self.seed)
        return dataset, Collate(self.tokenize, self._masks() if train else None, lm_tokenize)

    def _lm_tokenize(self) -> LMTokenize:
        if self.lm_tokenize is None:
            raise ValueError("data.lm_tokenize is not set (the CLI links it from the model)")
        return self.lm_tokenize

    def _masks(self) -> BatchMasks | None:
        recipes = tuple(n for n in self.needs if not isinstance(n, str))
        return BatchMasks(recipes) if recipes else None

    def _sampler(self, dataset: Dataset, train: bool) -> Sampler:
        """Our own samplers, so Lightning does not substitute its own.

        Training: one seeded permutation split across ranks. Evaluation: every
        item exactly once over all ranks.
        """
        rank, world_size = (
            (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        )
        if not train:
            return EvalShardSampler(dataset, world_size, rank, shuffle=False)
        return ResumableSampler(
            dataset,
            world_size,
            rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=True,
            resume_epoch=self.resume_position[0],
        )

    def state_dict(self) -> dict[str, int]:
        """Where the next training batch comes from, saved in every checkpoint written while
        fitting: a checkpoint after an epoch's last batch resumes at the next epoch's start,
        as Lightning's loops do."""
        if self.trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:
            return {"epoch": self.trainer.current_epoch + 1, "samples": 0}
        return {
            "epoch": self.trainer.current_epoch,
            "samples": progress.current.processed * self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Lightning restores this before it builds the training loader."""
        self.resume_position = (state["epoch"], state["samples"])

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        self._lockstep_loaders = []  # reloaded: the loaders made before count no more
        loader = self._train_loader()
        self.resume_position = (-1, 0)  # a loader made anew later (reloading) starts its epoch
        return loader

    def _train_loader(self) -> DataLoader | CombinedLoader:
        if not self.mixture:
            return self._loader("train", train=True)
        loaders = {
            part.tag.name: self._source_loader(
                part.source, True, part.batch_size or self.batch_size, part.tag
            )
            for part in self.mixture
        }
        if len(loaders) != len(self.mixture):
            raise ValueError("data.mixture: dataset names must be unique")
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader | list:
        """No validation source means no validation loop (Lightning skips an empty list)."""
        return [] if self.sources["val"] is None else self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)
