"""TCL's IMC and LMI terms against hand computation; pad tokens never count."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vlp.encoding import Encoding
from vlp.objectives.tcl import TripleContrastive, local_infonce, pooled_regions
from vlp.step import Step


def hand_lmi(g, locals_, masks, tau, per_sample_mean):
    """Loops over samples i and real positions m; negatives are other samples' real locals."""
    per_sample, everything = [], []
    for i, gi in enumerate(g):
        losses = []
        for m, l_im in enumerate(locals_[i]):
            if not masks[i][m]:
                continue
            pos = sum(a * b for a, b in zip(gi, l_im, strict=True)) / tau
            neg = sum(
                math.exp(sum(a * b for a, b in zip(gi, local, strict=True)) / tau)
                for j in range(len(g))
                if j != i
                for n, local in enumerate(locals_[j])
                if masks[j][n]
            )
            losses.append(-(pos - math.log(math.exp(pos) + neg)))
        per_sample.append(sum(losses) / len(losses))
        everything += losses
    return (
        sum(per_sample) / len(per_sample) if per_sample_mean else sum(everything) / len(everything)
    )


@pytest.mark.parametrize("per_sample_mean", [False, True])
def test_local_infonce_matches_hand_computation(per_sample_mean: bool) -> None:
    torch.manual_seed(0)
    g = F.normalize(torch.randn(3, 4), dim=-1)
    locals_ = F.normalize(torch.randn(3, 5, 4), dim=-1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    got = local_infonce(g, locals_, mask, locals_, mask, 0, torch.tensor(0.3), per_sample_mean)
    expected = hand_lmi(g.tolist(), locals_.tolist(), mask.tolist(), 0.3, per_sample_mean)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_pad_positions_change_nothing() -> None:
    g = F.normalize(torch.randn(2, 4), dim=-1)
    locals_ = F.normalize(torch.randn(2, 3, 4), dim=-1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    before = local_infonce(g, locals_, mask, locals_, mask, 0, torch.tensor(0.1), True)
    changed = locals_.clone()
    changed[0, 2] = 100.0
    after = local_infonce(g, changed, mask, changed, mask, 0, torch.tensor(0.1), True)
    assert torch.allclose(before, after)


def test_a_single_sample_has_no_negatives_and_zero_loss() -> None:
    g = F.normalize(torch.randn(1, 4), dim=-1)
    locals_ = F.normalize(torch.randn(1, 3, 4), dim=-1)
    mask = torch.ones(1, 3)
    assert local_infonce(g, locals_, mask, locals_, mask, 0, torch.tensor(0.1), False).item() == 0


def test_rank_rows_use_every_ranks_locals_as_negatives() -> None:
    g = F.normalize(torch.randn(4, 4), dim=-1)
    locals_ = F.normalize(torch.randn(4, 2, 4), dim=-1)
    mask = torch.ones(4, 2)
    tau = torch.tensor(0.2)
    whole = local_infonce(g, locals_, mask, locals_, mask, 0, tau, False)
    halves = [
        local_infonce(g[r : r + 2], locals_[r : r + 2], mask[:2], locals_, mask, r, tau, False)
        for r in (0, 2)
    ]
    assert whole.item() == pytest.approx(sum(h.item() for h in halves) / 2, rel=1e-6)


def test_regions_are_averages_of_grid_cells() -> None:
    tokens = torch.arange(16.0).view(1, 16, 1)  # a 4×4 grid, row-major
    regions = pooled_regions(tokens, 2)
    assert regions.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


@pytest.mark.parametrize("weighting", ["mean_of_six", "sum_of_three"])
def test_imc_terms_and_the_weighting_of_the_six(weighting: str) -> None:
    dim = 3
    tcl = TripleContrastive(
        embed_dim=dim, temperature=0.1, alpha=0.0, queue_size=8, weighting=weighting
    )
    tcl.bind(SimpleNamespace(vision=SimpleNamespace(width=dim), text=SimpleNamespace(width=dim)))
    with torch.no_grad():
        for proj in (
            tcl.image_proj,
            tcl.text_proj,
            tcl.image_proj_m.module,
            tcl.text_proj_m.module,
        ):
            proj.weight.copy_(torch.eye(dim))
            proj.bias.zero_()
    v = torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.2]])
    v_m = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.9, 0.1]])
    text_tokens = torch.tensor(
        [
            [[1.0, 0.0, 0.1], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]],
            [[0.1, 1.0, 0.0], [0.0, 0.4, 0.6], [0.3, 0.3, 0.3]],
        ]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    patch_tokens = torch.randn(2, 4, dim)

    class Text:
        tokenize = SimpleNamespace(max_length=3)

        def __call__(self, ids, mask_):
            return Encoding(pooled=text_tokens[:, 0], tokens=text_tokens, mask=mask)

    encoders = SimpleNamespace(
        vision=lambda _: Encoding(pooled=v, tokens=patch_tokens), text=Text()
    )
    teachers = {
        tcl.vision_teacher.key: lambda _: Encoding(pooled=v_m, tokens=patch_tokens),
        tcl.text_teacher.key: Text(),
    }
    batch = {
        "images": 0,
        "images_aug": 0,
        "text_ids": 0,
        "text_mask": 0,
        "image_ids": torch.tensor([5, 6]),
    }
    terms = tcl(Step(batch, encoders, teachers))
    vn, vmn = F.normalize(v, dim=-1), F.normalize(v_m, dim=-1)
    expected_i2i = F.cross_entropy(vn @ vmn.T / 0.1, torch.tensor([0, 1]))
    assert terms["i2i"].item() == pytest.approx(expected_i2i.item(), rel=1e-5)
    six = [terms[k].item() for k in ("i2t", "t2i", "i2i", "t2t", "lmi_image", "lmi_text")]
    # the code: the mean of the six; the paper: CMA + IMC + LMI, each a mean of two
    expected = sum(six) / 6 if weighting == "mean_of_six" else sum(six) / 2
    assert terms["contrastive_loss"].item() == pytest.approx(expected, rel=1e-6)

    ablated = TripleContrastive(embed_dim=dim, imc=False, lmi=False)
    ablated.bind(
        SimpleNamespace(vision=SimpleNamespace(width=dim), text=SimpleNamespace(width=dim))
    )
    assert ablated.imc is False and "images_aug" in ablated.needs


def test_an_unknown_weighting_is_refused() -> None:
    with pytest.raises(ValueError, match="weighting"):
        TripleContrastive(embed_dim=3, weighting="mean")
