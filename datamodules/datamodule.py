"""The data module: any sources per split, transformed, tokenized, split across ranks."""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from vlp.datamodules.collate import Collate
from vlp.datamodules.samples import as_samples
from vlp.datamodules.transforms import CLIP_MEAN, CLIP_STD, Augment, eval_transform, train_transform

PROVIDES = frozenset({"images", "text"})


class EvalShardSampler(DistributedSampler):
    """Rank r takes items r, r+W, r+2W, ...: every item exactly once, no padding.

    Lightning's default distributed sampler repeats items to even out ranks,
    which would count images twice in retrieval metrics.
    """

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


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
        mean, std: image normalisation (CLIP's by default).
        tokenize: linked from the model by the CLI, so captions are tokenized
            the way the text encoder expects.
    """

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
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        tokenize: Callable[[list[str]], dict[str, Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_transform = train_transform(image_size, augment, mean, std)
        self.eval_transform = eval_transform(image_size, mean, std)
        self.tokenize = tokenize

    @property
    def class_names(self) -> list[str] | None:
        """Zero-shot class names, from the first evaluation source that has them."""
        return self._eval_source_attr("class_names")

    @property
    def prompt_templates(self) -> list[str] | None:
        return self._eval_source_attr("prompt_templates")

    def _eval_source_attr(self, name: str) -> list[str] | None:
        for split in ("val", "test", "predict"):
            value = getattr(self.sources[split], name, None)
            if value:
                return list(value)
        return None

    def check_needs(self, needs: frozenset[str]) -> None:
        """Fail at start-up, not mid-epoch, when an objective needs a field we cannot build."""
        missing = needs - PROVIDES
        if missing:
            raise ValueError(f"objectives need batch fields {sorted(missing)}; data provides {sorted(PROVIDES)}")

    def _loader(self, split: str, train: bool) -> DataLoader:
        source = self.sources[split]
        if source is None:
            raise ValueError(f"data.{split} is not set: give a source for the {split} split")
        if self.tokenize is None:
            raise ValueError("data.tokenize is not set (the CLI links it from the model)")
        transform = self.train_transform if train else self.eval_transform
        dataset = as_samples(source, transform, all_captions=not train)
        streaming = isinstance(dataset, IterableDataset)
        sampler = None
        if not train and not streaming and self.trainer is not None and self.trainer.world_size > 1:
            sampler = EvalShardSampler(
                dataset, self.trainer.world_size, self.trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and not streaming,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=Collate(self.tokenize),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", train=False)
