"""Compositional hard-negative accuracy on hand-built cases and through the evaluator."""

from __future__ import annotations

import pytest
import torch

from tests.evaluation.test_rerank import TINY_FUSION, evaluate, tiny_model
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.records import ImageTextRecord
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoding import Encoding
from vlp.evaluation.compositional import compositional_outcomes, image_index_of_texts, itc_wins
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.itm import ImageTextMatching


def test_itc_hand_built_case() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])  # texts 0, 1 → image 0; 2 → 1
    text_image_index = image_index_of_texts(torch.tensor([7, 3]), torch.tensor([7, 7, 3]))
    assert text_image_index.tolist() == [0, 0, 1]
    negatives = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    negative_text_index = torch.tensor([0, 0, 1, 2, 2])
    # true scores: 0.8, 0.8, 0.6, 1.0, 1.0 vs negatives 0.6, 0.8 (tie), 0.6 (tie), 0.0, 1.0 (tie)
    outcomes = itc_wins(images, texts, negatives, negative_text_index, text_image_index)
    assert outcomes.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]


class TableText:
    """Text "encoder" whose [CLS] is a row of a table looked up by the first id."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> Encoding:
        rows = self.table[ids[:, 0]]
        return Encoding(pooled=rows, tokens=rows[:, None], mask=mask)


def test_itm_compares_the_fused_true_and_negative_pairs() -> None:
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
    text_encoder = TableText(table)
    images = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    image = Encoding(pooled=images, tokens=images[:, None])
    batch = {
        "image_ids": torch.tensor([1, 2]),
        "text_image_ids": torch.tensor([1, 2]),
        "text_ids": torch.tensor([[0], [1]]),
        "text_mask": torch.ones(2, 1, dtype=torch.long),
        "negative_ids": torch.tensor([[2], [3], [0]]),
        "negative_mask": torch.ones(3, 1, dtype=torch.long),
        "negative_text_index": torch.tensor([0, 0, 1]),
    }
    text = text_encoder(batch["text_ids"], batch["text_mask"])

    def fusion(text: Encoding, image: Encoding) -> Encoding:
        pooled = text.tokens[:, 0] * image.tokens[:, 0]
        return Encoding(pooled=pooled, tokens=pooled[:, None])

    outcomes = compositional_outcomes(
        batch,
        image,
        text,
        lambda e: e.pooled,
        lambda e: e.pooled,
        text_encoder,
        fusion,
        lambda fused: fused.pooled.sum(-1),  # ⟨text, image⟩ again, through the "fusion"
    )
    # image 0 = (2, 1): true (1, 0) → 2; negatives (.5, .5) → 1.5 ✓, (−1, 0) → −2 ✓
    # image 1 = (1, 3): true (0, 1) → 3; negative (1, 0) → 1 ✓
    assert outcomes["compositional_itc"].tolist() == [1.0, 1.0, 1.0]
    assert outcomes["compositional_itm"].tolist() == [1.0, 1.0, 1.0]
    swapped = compositional_outcomes(
        batch, image, text, lambda e: e.pooled, lambda e: e.pooled, text_encoder, fusion,
        lambda fused: -fused.pooled.sum(-1),
    )  # fmt: skip
    assert swapped["compositional_itm"].tolist() == [0.0, 0.0, 0.0]


def test_batch_without_negatives_gives_empty_outcomes() -> None:
    image = Encoding(pooled=torch.zeros(1, 2), tokens=torch.zeros(1, 1, 2))
    outcomes = compositional_outcomes({}, image, image, None, None, None, object(), len)
    assert {name: o.numel() for name, o in outcomes.items()} == {
        "compositional_itc": 0,
        "compositional_itm": 0,
    }


class WithoutNegatives(torch.utils.data.Dataset):
    """The scenes as a source that has no hard negatives (like real data)."""

    def __init__(self, scenes: SyntheticScenes) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> ImageTextRecord:
        record = self.scenes[index]
        return ImageTextRecord(record.image, record.captions, record.image_id, record.label)


@torch.no_grad()
def accuracy_one_pair_at_a_time(model, scenes: SyntheticScenes) -> dict[str, float]:
    """Each image, caption and negative encoded alone, straight from the records."""
    itc = model.objectives[0]
    itm = model.objectives[1] if len(model.objectives) > 1 else None
    transform = VLPDataModule(image_size=32).eval_transform
    wins: dict[str, list[bool]] = {"itc": [], "itm": []}
    for index in range(len(scenes)):
        record = scenes[index]
        image = model.encoders.vision(transform(record.image)[None])
        for caption, negatives in zip(record.captions, record.meta["hard_negatives"], strict=True):
            true = model.encoders.text(**model.tokenize([caption]))
            for negative in negatives:
                false = model.encoders.text(**model.tokenize([negative["text"]]))
                v = itc.embed_image(image)
                wins["itc"].append(bool(v @ itc.embed_text(true).T > v @ itc.embed_text(false).T))
                if itm is not None:
                    fuse = model.encoders.fusion
                    true_logit = itm.match_logit(fuse(true, image))
                    wins["itm"].append(bool(true_logit > itm.match_logit(fuse(false, image))))
    return {kind: sum(w) / len(w) for kind, w in wins.items() if w}


@pytest.mark.parametrize("with_itm", [False, True])
def test_evaluator_logs_compositional_accuracy_only_with_negatives(with_itm: bool) -> None:
    objectives = [Contrastive(embed_dim=8)] + ([ImageTextMatching()] if with_itm else [])
    model = tiny_model(objectives, TINY_FUSION)
    scenes = SyntheticScenes("val", num_images=4, image_size=32, captions_per_image=2)
    metrics = evaluate(model, scenes)
    expected = accuracy_one_pair_at_a_time(model, scenes)
    assert metrics["compositional/itc_acc"] == pytest.approx(expected["itc"])
    assert ("compositional/itm_acc" in metrics) == with_itm
    if with_itm:
        assert metrics["compositional/itm_acc"] == pytest.approx(expected["itm"])
    plain = evaluate(model, WithoutNegatives(scenes))
    assert not any(name.startswith("compositional/") for name in plain)
    assert plain["retrieval/i2t_r1"] == metrics["retrieval/i2t_r1"]
