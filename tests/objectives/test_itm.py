"""ITM: the hard-negative sampler never draws a positive, follows softmax(s/τ), never
crashes; the loss is the hand-computed cross-entropy over positives and negatives."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vlp.encoding import Encoding
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.itm import ImageTextMatching, sample_hard_negatives
from vlp.step import Step


def random_case(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A similarity matrix and ids with the awkward cases mixed in."""
    size = int(torch.randint(1, 9, (), generator=generator))
    pattern = int(torch.randint(4, (), generator=generator))
    if pattern == 0:
        ids = torch.zeros(size, dtype=torch.long)  # every caption of one image
    elif pattern == 1:
        ids = torch.arange(size)
    else:
        ids = torch.randint(0, max(1, size // 2), (size,), generator=generator)
    similarity = torch.rand(size, size, generator=generator) * 2 - 1
    kind = int(torch.randint(6, (), generator=generator))
    row = int(torch.randint(size, (), generator=generator))
    if kind == 0:
        similarity[row] = float("nan")
    elif kind == 1:
        similarity[row, 0] = float("inf")
        similarity[:, -1] = float("-inf")
    elif kind == 2:
        similarity = similarity.round()  # ties
    elif kind == 3:
        similarity.fill_(0.5)  # everything tied
    elif kind == 4:
        similarity = similarity * 1e4  # overflows / underflows after /τ
    temperature = [0.07, 1e-3, 1.0][int(torch.randint(3, (), generator=generator))]
    return similarity, ids, temperature


def test_sampler_never_draws_a_same_image_pair_and_never_crashes() -> None:
    generator = torch.Generator().manual_seed(0)
    seen = {"none": 0, "some": 0}
    for _ in range(400):
        similarity, ids, temperature = random_case(generator)
        for scores in (similarity, similarity.T, similarity.half()):
            drawn = sample_hard_negatives(scores, ids, temperature=temperature, generator=generator)
            assert drawn.shape == ids.shape and drawn.dtype == torch.long
            for i, j in enumerate(drawn.tolist()):
                has_candidate = bool((ids != ids[i]).any())
                assert (j >= 0) == has_candidate
                if j >= 0:
                    assert ids[j] != ids[i] and j < len(ids)
                seen["some" if has_candidate else "none"] += 1
    assert seen["none"] > 50 and seen["some"] > 500  # both cases were exercised


def test_batch_of_one_has_no_negative() -> None:
    drawn = sample_hard_negatives(torch.tensor([[0.3]]), torch.tensor([7]))
    assert drawn.tolist() == [-1]


def test_rows_and_columns_may_have_their_own_ids() -> None:
    similarity = torch.zeros(2, 3)
    drawn = sample_hard_negatives(similarity, torch.tensor([1, 2]), torch.tensor([1, 1, 2]))
    assert drawn[0].item() == 2 and drawn[1].item() in (0, 1)


def test_draws_follow_the_softmax_over_other_images() -> None:
    scores = torch.tensor([0.9, 0.0, 0.1, 0.25])  # column 0 is the row's own image
    column_ids = torch.tensor([5, 6, 7, 8])
    draws = 40_000
    drawn = sample_hard_negatives(
        scores.expand(draws, 4),
        torch.full((draws,), 5),
        column_ids,
        temperature=0.1,
        generator=torch.Generator().manual_seed(1),
    )
    frequencies = torch.bincount(drawn, minlength=4).float() / draws
    exps = [math.exp(s / 0.1) for s in (0.0, 0.1, 0.25)]
    expected = [0.0] + [e / sum(exps) for e in exps]
    assert frequencies.tolist() == pytest.approx(expected, abs=0.01)


def test_non_finite_row_falls_back_to_uniform_over_valid_columns() -> None:
    draws = 20_000
    drawn = sample_hard_negatives(
        torch.full((draws, 3), float("nan")),
        torch.zeros(draws, dtype=torch.long),
        torch.tensor([0, 1, 2]),
        generator=torch.Generator().manual_seed(2),
    )
    frequencies = torch.bincount(drawn, minlength=3).float() / draws
    assert frequencies.tolist() == pytest.approx([0.0, 0.5, 0.5], abs=0.02)


class ProductFusion:
    """Fused [CLS] = image [CLS] ⊙ text [CLS]: pairs are easy to compute by hand."""

    width = 2

    def __call__(self, text: Encoding, image: Encoding) -> Encoding:
        pooled = text.tokens[:, 0] * image.tokens[:, 0]
        return Encoding(pooled=pooled, tokens=pooled[:, None], mask=text.mask)


class CosineEmbedder:
    """The contrastive space's stand-in, with its (learnt, clamped) τ."""

    def __init__(self, temperature: float = 0.07) -> None:
        self.temperature = torch.tensor(temperature)

    def embed_image(self, image: Encoding) -> torch.Tensor:
        return F.normalize(image.pooled, dim=-1)

    def embed_text(self, text: Encoding) -> torch.Tensor:
        return F.normalize(text.pooled, dim=-1)


HEAD_WEIGHT = [[0.3, -0.2], [0.5, 0.4]]
HEAD_BIAS = [0.1, -0.1]


def itm_with_fixed_head(**kwargs) -> ImageTextMatching:
    itm = ImageTextMatching(**kwargs)
    itm.bind(SimpleNamespace(fusion=ProductFusion()))
    with torch.no_grad():
        itm.head.weight.copy_(torch.tensor(HEAD_WEIGHT))
        itm.head.bias.copy_(torch.tensor(HEAD_BIAS))
    return itm


def step_with(
    images: torch.Tensor, texts: torch.Tensor, ids: list[int], embedder: object | None = None
) -> Step:
    encoders = SimpleNamespace(
        vision=lambda _: Encoding(pooled=images, tokens=images[:, None]),
        text=lambda ids, mask: Encoding(pooled=texts, tokens=texts[:, None], mask=mask),
        fusion=ProductFusion(),
    )
    batch = {
        "images": torch.zeros(len(ids)),
        "text_ids": torch.zeros(len(ids), 1),
        "text_mask": torch.ones(len(ids), 1, dtype=torch.long),
        "image_ids": torch.tensor(ids),
    }
    return Step(batch, encoders, {}, embedder=embedder or CosineEmbedder())


def hand_logits(v, w, i: int, t: int) -> list[float]:
    """W (v_i ⊙ w_t) + b, with loops."""
    fused = [a * b for a, b in zip(v[i], w[t], strict=True)]
    return [
        sum(wk * f for wk, f in zip(row, fused, strict=True)) + bias
        for row, bias in zip(HEAD_WEIGHT, HEAD_BIAS, strict=True)
    ]


def hand_cross_entropy(v, w, pairs: list[tuple[int, int, int]]) -> float:
    """Mean over (image, text, label) of −log softmax(logits)[label]."""
    total = 0.0
    for i, t, label in pairs:
        logits = hand_logits(v, w, i, t)
        total += -(logits[label] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(pairs)


def hand_accuracy(v, w, pairs: list[tuple[int, int, int]]) -> float:
    right = [int(hand_logits(v, w, i, t)[1] > hand_logits(v, w, i, t)[0]) == y for i, t, y in pairs]
    return sum(right) / len(pairs)


# image 2 is most like text 0 and text 2 most like image 1, so with a tiny τ the draws
# are determined; images 0 and 1 share an id, so each can only draw text 2 (and back).
V = [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]
W = [[0.2, 1.0], [1.0, 0.0], [0.0, 1.0]]
IDS = [4, 4, 9]
PAIRS = [
    (0, 0, 1), (1, 1, 1), (2, 2, 1),  # positives
    (0, 2, 0), (1, 2, 0), (2, 0, 0),  # each image with a drawn text
    (2, 0, 0), (2, 1, 0), (1, 2, 0),  # each text with a drawn image
]  # fmt: skip


def test_loss_is_the_hand_computed_cross_entropy_over_positives_and_hard_negatives() -> None:
    itm = itm_with_fixed_head(temperature=1e-3)
    terms = itm(step_with(torch.tensor(V), torch.tensor(W), IDS))
    assert terms["itm_loss"].item() == pytest.approx(hand_cross_entropy(V, W, PAIRS), rel=1e-5)
    assert terms["accuracy"].item() == pytest.approx(hand_accuracy(V, W, PAIRS))
    assert terms["no_negative"].item() == 0


def test_gradients_flow_through_the_negatives_too() -> None:
    images = torch.tensor(V, requires_grad=True)
    texts = torch.tensor(W, requires_grad=True)
    itm_with_fixed_head(temperature=1e-3)(step_with(images, texts, IDS))["itm_loss"].backward()
    ref_images = torch.tensor(V, requires_grad=True)
    ref_texts = torch.tensor(W, requires_grad=True)
    index = torch.tensor(PAIRS)
    fused = ref_images[index[:, 0]] * ref_texts[index[:, 1]]
    logits = fused @ torch.tensor(HEAD_WEIGHT).T + torch.tensor(HEAD_BIAS)
    F.cross_entropy(logits, index[:, 2]).backward()
    assert torch.allclose(images.grad, ref_images.grad, atol=1e-6)
    assert torch.allclose(texts.grad, ref_texts.grad, atol=1e-6)


@pytest.mark.parametrize(("ids", "missing"), [([3], 2), ([5, 5, 5], 6)])
def test_without_any_negative_the_loss_is_over_the_positives(ids, missing) -> None:
    v, w = V[: len(ids)], W[: len(ids)]
    terms = itm_with_fixed_head()(step_with(torch.tensor(v), torch.tensor(w), ids))
    positives = [(i, i, 1) for i in range(len(ids))]
    assert terms["itm_loss"].item() == pytest.approx(hand_cross_entropy(v, w, positives), rel=1e-5)
    assert terms["no_negative"].item() == missing


def test_match_logit_is_the_log_odds_of_a_match() -> None:
    itm = itm_with_fixed_head()
    fused = Encoding(pooled=torch.tensor([[1.0, 2.0]]), tokens=torch.zeros(1, 1, 2))
    logits = itm.logits(fused)
    assert itm.match_logit(fused).item() == pytest.approx((logits[0, 1] - logits[0, 0]).item())
    assert torch.sigmoid(itm.match_logit(fused)).item() == pytest.approx(
        logits.softmax(-1)[0, 1].item()
    )


def test_needs_a_fusion_encoder() -> None:
    with pytest.raises(ValueError, match=r"model\.fusion"):
        ImageTextMatching().bind(SimpleNamespace(fusion=None))


def test_default_temperature_is_the_contrastive_objectives_current_tau() -> None:
    """ALBEF samples with its learnt ITC τ: a tiny contrastive τ makes the draws those of
    ``PAIRS``, and a changed τ is picked up at the next step."""
    embedder = CosineEmbedder(temperature=1e-3)
    itm = itm_with_fixed_head()
    step = step_with(torch.tensor(V), torch.tensor(W), IDS, embedder)
    assert itm(step)["itm_loss"].item() == pytest.approx(hand_cross_entropy(V, W, PAIRS), rel=1e-5)
    embedder.temperature = torch.tensor(0.3)
    assert itm.sampling_temperature(step).item() == pytest.approx(0.3)
    assert itm_with_fixed_head(temperature=0.05).sampling_temperature(step) == 0.05


def test_default_temperature_is_the_contrastive_tau_without_its_gradient() -> None:
    contrastive = Contrastive(embed_dim=2, temperature=0.2)
    step = Step({}, SimpleNamespace(), {}, embedder=contrastive)
    tau = itm_with_fixed_head().sampling_temperature(step)
    assert tau.item() == pytest.approx(0.2) and not tau.requires_grad


def test_default_temperature_needs_an_embedder_with_a_tau() -> None:
    class NoTau:
        pass

    step = Step({}, SimpleNamespace(), {}, embedder=NoTau())
    with pytest.raises(ValueError, match="set a number"):
        itm_with_fixed_head().sampling_temperature(step)


@pytest.mark.parametrize("ids", [[3], [5, 5, 5], IDS])
def test_the_fusion_stack_runs_twice_with_or_without_negatives(ids) -> None:
    """Sharded ranks gather each fusion layer collectively, so a rank without negatives
    still fuses a (weightless) pair: its gradients are those of the positives alone."""
    v, w = torch.tensor(V[: len(ids)]), torch.tensor(W[: len(ids)])
    images, texts = v.clone().requires_grad_(), w.clone().requires_grad_()
    step = step_with(images, texts, ids)
    calls = []
    fusion = step.encoders.fusion
    step.encoders.fusion = lambda text, image: calls.append(len(text.pooled)) or fusion(text, image)
    itm_with_fixed_head(temperature=1e-3)(step)["itm_loss"].backward()
    assert len(calls) == 2
    if len(set(ids)) == 1:
        ref_images, ref_texts = v.clone().requires_grad_(), w.clone().requires_grad_()
        logits = (ref_images * ref_texts) @ torch.tensor(HEAD_WEIGHT).T + torch.tensor(HEAD_BIAS)
        F.cross_entropy(logits, torch.ones(len(ids), dtype=torch.long)).backward()
        assert torch.allclose(images.grad, ref_images.grad, atol=1e-6)
        assert torch.allclose(texts.grad, ref_texts.grad, atol=1e-6)
