"""BERT token masking: what may be masked, the 80/10/10 proportions, reproducibility."""

from __future__ import annotations

import pytest
import torch

from vlp.masking import IGNORE_INDEX, BlockMasking, SpanMasking, _spans, mask_tokens

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


# data2vec's recipes: BEiT block masks of the patch grid, span masks of captions.


def test_spans_cover_the_positions_after_each_start() -> None:
    starts = torch.tensor([[0, 1, 0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    expected = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(_spans(starts, 3), expected)
    assert torch.equal(_spans(starts, 1), starts)


def test_span_one_is_bert_selection_unchanged() -> None:
    ids, attention = random_captions(torch.Generator().manual_seed(5), 8, 12)
    plain = mask(ids, attention, 0.3, 9)
    spans = mask_tokens(
        ids, attention, SPECIAL, MASK, VOCAB, 0.3, torch.Generator().manual_seed(9), span=1
    )
    assert torch.equal(plain.ids, spans.ids) and torch.equal(plain.labels, spans.labels)


def test_span_masking_masks_runs_of_maskable_tokens_at_the_expected_rate() -> None:
    ids = torch.randint(len(SPECIAL), VOCAB, (2000, 40), generator=torch.Generator())
    ids[:, 0], ids[:, -1] = CLS, SEP
    recipe = SpanMasking(SPECIAL, MASK, VOCAB, ratio=0.35, span=4)
    masked = recipe(ids, torch.ones_like(ids), torch.Generator().manual_seed(0))
    selected = masked.selected
    assert not selected[:, 0].any() and not selected[:, -1].any()
    assert torch.equal(masked.ids[selected], torch.full_like(ids[selected], MASK))  # all [MASK]
    # Starts with probability 0.35/4 each cover 4 positions: 1 − (1 − 0.0875)^4 of the inner ones.
    inner = selected[:, 4:-4].float().mean().item()
    assert inner == pytest.approx(1 - (1 - 0.35 / 4) ** 4, abs=0.01)
    # Runs are at least 4 long unless they touch [CLS]/[SEP].
    runs = torch.diff(selected[:, 1:-1].int(), dim=1, prepend=torch.zeros(2000, 1, dtype=torch.int))
    starts, ends = (runs == 1).nonzero().tolist(), []
    for row, start in starts[:200]:
        end = start
        while end + 1 < 38 and selected[row, 1 + end + 1]:
            end += 1
        ends.append((start, end))
    assert ends and all(end - start + 1 >= 4 or start == 0 or end == 37 for start, end in ends)


def test_a_single_block_is_an_exact_square_when_aspect_and_area_are_fixed() -> None:
    for seed in range(20):
        recipe = BlockMasking((3, 3), ratio=4 / 9, min_block=4, min_aspect=1.0)
        grid = recipe(torch.Generator().manual_seed(seed)).view(3, 3)
        rows, cols = grid.any(1).nonzero().flatten(), grid.any(0).nonzero().flatten()
        assert grid.sum() == 4 and len(rows) == len(cols) == 2
        assert grid[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()


def test_block_masks_reach_data2vecs_ratio_and_never_exceed_it() -> None:
    recipe = BlockMasking((14, 14), ratio=0.6, min_block=16)
    counts = torch.stack([recipe(torch.Generator().manual_seed(s)).sum() for s in range(200)])
    target = round(0.6 * 196)
    assert counts.max() <= target
    # The last blocks may not fit exactly: BEiT stops when a block adds nothing.
    assert counts.float().mean() > target - 1.5 and counts.min() >= target - 10
    mask = recipe(torch.Generator().manual_seed(0))
    assert mask.shape == (196,) and mask.dtype == torch.bool


def test_blocks_are_contiguous_not_scattered_patches() -> None:
    grid = BlockMasking((14, 14), ratio=0.4, min_block=16)(torch.Generator().manual_seed(1))
    grid = grid.view(14, 14).int()
    neighbours = torch.zeros_like(grid)
    neighbours[1:] += grid[:-1]
    neighbours[:-1] += grid[1:]
    neighbours[:, 1:] += grid[:, :-1]
    neighbours[:, :-1] += grid[:, 1:]
    # Inside blocks of ≥ 2×2 most masked patches have several masked neighbours;
    # independent patches at 40 % would average 1.6.
    assert neighbours[grid.bool()].float().mean() > 2.5


def test_block_masks_are_reproducible_from_the_generator() -> None:
    recipe = BlockMasking((8, 8), ratio=0.6, min_block=4)
    first = recipe(torch.Generator().manual_seed(3))
    assert torch.equal(first, recipe(torch.Generator().manual_seed(3)))
    assert not torch.equal(first, recipe(torch.Generator().manual_seed(4)))
