"""BERT token masking: what may be masked, the 80/10/10 proportions, reproducibility."""

from __future__ import annotations

import pytest
import torch

from vlp.masking import IGNORE_INDEX, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 50


def random_captions(generator: torch.Generator, rows: int, length: int):
    """[CLS] words [SEP] [PAD]..., with specials also sprinkled among the words."""
    ids = torch.randint(len(SPECIAL), VOCAB, (rows, length), generator=generator)
    sprinkled = torch.rand(rows, length, generator=generator) < 0.1
    specials = torch.tensor([UNK, MASK])[torch.randint(2, (rows, length), generator=generator)]
    ids = torch.where(sprinkled, specials, ids)
    lengths = torch.randint(2, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)
    mask = (positions[None] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD))
    return ids, mask


def mask(ids, attention_mask, ratio=0.15, seed=0, vocab=VOCAB):
    return mask_tokens(
        ids, attention_mask, SPECIAL, MASK, vocab, ratio, torch.Generator().manual_seed(seed)
    )


def test_pad_and_special_tokens_are_never_touched() -> None:
    for seed in range(30):
        ids, attention = random_captions(torch.Generator().manual_seed(seed), 16, 12)
        masked = mask(ids, attention, ratio=0.9, seed=seed)
        protected = (attention == 0) | torch.isin(ids, torch.tensor(SPECIAL))
        assert protected.any()
        assert (masked.labels[protected] == IGNORE_INDEX).all()
        assert torch.equal(masked.ids[protected], ids[protected])
        unselected = masked.labels == IGNORE_INDEX
        assert torch.equal(masked.ids[unselected], ids[unselected])
        assert torch.equal(masked.labels[~unselected], ids[~unselected])
        assert masked.selected.any()


def test_selection_ratio_and_80_10_10_proportions() -> None:
    ids = torch.randint(len(SPECIAL), 30_000, (1000, 100), generator=torch.Generator())
    masked = mask(ids, torch.ones_like(ids), vocab=30_000)
    selected = masked.selected
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.005)
    chosen_ids, originals = masked.ids[selected], ids[selected]
    n = selected.sum().item()  # ≈ 15,000
    to_mask = (chosen_ids == MASK).sum().item() / n
    # A random replacement equals the original with probability 1/29,995: negligible.
    kept = (chosen_ids == originals).sum().item() / n
    replaced = ((chosen_ids != MASK) & (chosen_ids != originals)).sum().item() / n
    assert to_mask == pytest.approx(0.8, abs=0.02)
    assert replaced == pytest.approx(0.1, abs=0.015)
    assert kept == pytest.approx(0.1, abs=0.015)


def test_random_replacements_are_uniform_over_non_special_ids() -> None:
    ids = torch.full((2000, 50), 10)
    masked = mask_tokens(
        ids,
        torch.ones_like(ids),
        SPECIAL,
        MASK,
        15,
        1.0,
        torch.Generator().manual_seed(1),
        0.0,
        1.0,
    )
    counts = torch.bincount(masked.ids.flatten(), minlength=15)
    assert counts[list(SPECIAL)].sum() == 0
    expected = ids.numel() / (15 - len(SPECIAL))
    assert ((counts[len(SPECIAL) :] - expected).abs() / expected).max() < 0.05


def test_ratio_zero_selects_nothing_and_one_selects_every_maskable_token() -> None:
    ids, attention = random_captions(torch.Generator().manual_seed(3), 8, 10)
    assert not mask(ids, attention, ratio=0.0).selected.any()
    maskable = attention.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    assert torch.equal(mask(ids, attention, ratio=1.0).selected, maskable)


def test_reproducible_from_the_generator() -> None:
    ids, attention = random_captions(torch.Generator().manual_seed(4), 8, 10)
    first, again = mask(ids, attention, 0.5, 7), mask(ids, attention, 0.5, 7)
    assert torch.equal(first.ids, again.ids) and torch.equal(first.labels, again.labels)
    other = mask(ids, attention, 0.5, 8)
    assert not torch.equal(first.labels, other.labels)


def test_bad_proportions_are_refused() -> None:
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="ratio"):
        mask_tokens(ids, ids, SPECIAL, MASK, VOCAB, ratio=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        mask_tokens(ids, ids, SPECIAL, MASK, VOCAB, mask_fraction=0.9, random_fraction=0.2)
