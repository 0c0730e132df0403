"""ITM re-ranked retrieval against a brute-force reading of the protocol, and the
evaluator's re-ranking against the fusion encoder run on every pair."""

from __future__ import annotations

import pytest
import torch

from tests.evaluation.ranks import evaluate_share, one_and_two_ranks
from tests.tiny import TINY_TEXT, TINY_VISION
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders import FusionConfig, TextEncoder, VisionEncoder
from vlp.encoding import Encoding
from vlp.evaluation.rerank import (
    TokenStore,
    fusion_scorer,
    itm_reranked_recall,
    reranked_scores,
    top_candidates,
)
from vlp.evaluation.retrieval import retrieval_recall
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.itm import ImageTextMatching

IMAGE_IDS = torch.tensor([10, 11, 12, 13, 14, 15])
TEXT_IMAGE_IDS = torch.tensor([10, 10, 11, 12, 12, 12, 13, 14, 15, 15, 11])


def brute_force_rankings(similarity, itm, k):
    """Per query: its top-k candidates by similarity sorted by ITM, then the rest by similarity."""

    def rank(sim_row, itm_row):
        by_sim = sorted(range(len(sim_row)), key=lambda c: -sim_row[c])
        top = sorted(by_sim[:k], key=lambda c: -itm_row[c])
        return top + by_sim[k:]

    sim, scores = similarity.tolist(), itm.tolist()
    i2t = [rank(sim[i], scores[i]) for i in range(len(sim))]
    sim_t, scores_t = similarity.T.tolist(), itm.T.tolist()
    t2i = [rank(sim_t[t], scores_t[t]) for t in range(len(sim_t))]
    return i2t, t2i


def recall_from_rankings(i2t, t2i, k):
    i2t_hits = [any(TEXT_IMAGE_IDS[t] == IMAGE_IDS[i] for t in r[:k]) for i, r in enumerate(i2t)]
    t2i_hits = [any(IMAGE_IDS[i] == TEXT_IMAGE_IDS[t] for i in r[:k]) for t, r in enumerate(t2i)]
    return sum(i2t_hits) / len(i2t_hits), sum(t2i_hits) / len(t2i_hits)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 3, 20])
def test_matches_brute_force_reranking(seed: int, k: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    similarity = torch.rand(6, 11, generator=generator) * 2 - 1
    itm = torch.randn(6, 11, generator=generator) * 5
    scored: list[tuple[int, int]] = []

    def score_pairs(images, texts):
        scored.extend(zip(images.tolist(), texts.tolist(), strict=True))
        return itm[images, texts]

    match = IMAGE_IDS[:, None] == TEXT_IMAGE_IDS[None, :]
    i2t_scores, t2i_scores = reranked_scores(similarity, match, k, score_pairs)
    expected_i2t, expected_t2i = brute_force_rankings(similarity, itm, k)
    assert i2t_scores.argsort(1, descending=True).tolist() == expected_i2t
    assert t2i_scores.T.argsort(1, descending=True).tolist() == expected_t2i
    assert len(scored) == len(set(scored))  # each candidate pair goes through fusion once
    metrics = itm_reranked_recall(
        similarity, IMAGE_IDS, TEXT_IMAGE_IDS, k, lambda i, t: itm[i, t], ks=(1, 2, 5)
    )
    for at in (1, 2, 5):
        i2t, t2i = recall_from_rankings(expected_i2t, expected_t2i, at)
        assert metrics[f"i2t_r{at}"] == pytest.approx(i2t)
        assert metrics[f"t2i_r{at}"] == pytest.approx(t2i)


def test_reranking_one_candidate_keeps_contrastive_recall() -> None:
    similarity = torch.randn(6, 11, generator=torch.Generator().manual_seed(9))
    reranked = itm_reranked_recall(
        similarity, IMAGE_IDS, TEXT_IMAGE_IDS, 1, lambda i, t: -100 * torch.ones(len(i))
    )
    assert reranked == retrieval_recall(similarity, IMAGE_IDS, TEXT_IMAGE_IDS)


def test_candidates_tied_at_the_kth_score_are_chosen_against_the_query() -> None:
    # image 0's true text (index 3) ties with wrong texts 1 and 4 for the last of 2 places
    similarity = torch.tensor([[0.1, 0.5, 0.9, 0.5, 0.5]])
    match = torch.tensor([[False, False, False, True, False]])
    assert top_candidates(similarity, match, 2).tolist() == [[2, 1]]
    assert top_candidates(similarity, match, 4).tolist() == [[2, 1, 4, 3]]
    assert top_candidates(similarity, ~match, 3).tolist() == [[2, 3, 1]]  # 3 is the wrong one
    # a text that every image scores alike: its wrong images go first, whatever their index
    images = torch.tensor([20, 21, 22])
    metrics = itm_reranked_recall(
        torch.zeros(3, 1), images, torch.tensor([22]), 2, lambda i, t: torch.zeros(len(i))
    )
    assert metrics["t2i_r1"] == 0.0  # reranking a candidate set without the true image
    contrastive = retrieval_recall(torch.zeros(3, 1), images, torch.tensor([22]), ks=(1, 2, 3))
    assert contrastive["t2i_r2"] == 0.0 and contrastive["t2i_r3"] == 1.0


TINY_FUSION = FusionConfig(depth=1, heads=2)


def tiny_model(objectives, fusion: FusionConfig | None = TINY_FUSION):
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=40),
        objectives,
        fusion=fusion,
    ).eval()


def evaluate(model: VLPModule, scenes: SyntheticScenes) -> dict[str, float]:
    data = VLPDataModule(
        val=scenes, batch_size=3, num_workers=0, image_size=32, tokenize=model.tokenize
    )
    for batch in data.val_dataloader():
        model.evaluator.add(batch)
    return model.evaluator.compute(None, None)


@torch.no_grad()
def itm_on_every_pair(model: VLPModule, scenes: SyntheticScenes) -> torch.Tensor:
    """The ITM match logit of every (image, caption), each caption tokenized on its own."""
    data = VLPDataModule(image_size=32)
    images = model.encoders.vision(
        torch.stack([data.eval_transform(scenes[i].image) for i in range(len(scenes))])
    )
    captions = [c for i in range(len(scenes)) for c in scenes[i].captions]
    itm = model.objectives[1]
    scores = torch.empty(len(scenes), len(captions))
    for t, caption in enumerate(captions):
        text = model.encoders.text(**model.tokenize([caption]))
        for i in range(len(scenes)):
            image = Encoding(images.pooled[i : i + 1], images.tokens[i : i + 1])
            scores[i, t] = itm.match_logit(model.encoders.fusion(text, image))
    return scores


def test_stored_padded_tokens_score_like_each_pair_fused_alone() -> None:
    scenes = SyntheticScenes("val", num_images=4, image_size=32, captions_per_image=2)
    model = tiny_model([Contrastive(embed_dim=8), ImageTextMatching()])
    data = VLPDataModule(
        val=scenes, batch_size=2, num_workers=0, image_size=32, tokenize=model.tokenize
    )
    store = TokenStore()
    lengths = set()
    with torch.no_grad():
        for batch in data.val_dataloader():
            lengths.add(batch["text_ids"].shape[1])
            store.add(
                model.encoders.vision(batch["images"]),
                model.encoders.text(batch["text_ids"], batch["text_mask"]),
            )
    assert len(lengths) > 1  # batches were padded to different lengths
    images, texts = store.gathered()
    score = fusion_scorer(
        model.encoders.fusion, model.objectives[1].match_logit, images, texts, chunk_size=5
    )
    pairs = torch.cartesian_prod(torch.arange(4), torch.arange(8))
    got = score(pairs[:, 0], pairs[:, 1]).view(4, 8)
    assert torch.allclose(got, itm_on_every_pair(model, scenes), atol=1e-5)


def test_evaluator_reranks_with_the_fusion_encoder_on_each_pair() -> None:
    scenes = SyntheticScenes("val", num_images=5, image_size=32, captions_per_image=3)
    model = tiny_model([Contrastive(embed_dim=8), ImageTextMatching(rerank_k=100)])
    metrics = evaluate(model, scenes)
    image_ids = torch.tensor([scenes[i].image_id for i in range(len(scenes))])
    text_ids = image_ids.repeat_interleave(3)
    # k covers every candidate, so the ranking is by ITM alone
    expected = retrieval_recall(itm_on_every_pair(model, scenes), image_ids, text_ids)
    for name, value in expected.items():
        assert metrics[f"retrieval_itm/{name}"] == pytest.approx(value), name


@pytest.mark.parametrize(
    ("objectives", "fusion"),
    [
        (lambda: [Contrastive(embed_dim=8)], TINY_FUSION),
        (lambda: [Contrastive(embed_dim=8), ImageTextMatching(rerank_k=0)], TINY_FUSION),
    ],
    ids=["no_itm", "rerank_off"],
)
def test_no_reranking_without_itm_or_with_k_zero(objectives, fusion) -> None:
    scenes = SyntheticScenes("val", num_images=3, image_size=32, captions_per_image=2)
    model = tiny_model(objectives(), fusion)
    metrics = evaluate(model, scenes)
    assert "retrieval/i2t_r1" in metrics
    assert not any(name.startswith("retrieval_itm/") for name in metrics)
    assert len(model.evaluator._tokens) == 0


def rerank_metrics(rank: int, world_size: int) -> dict[str, float]:
    from vlp.datamodules.collate import Collate
    from vlp.datamodules.samples import Views, as_samples

    model = tiny_model([Contrastive(embed_dim=8), ImageTextMatching(rerank_k=4)])
    scenes = SyntheticScenes("val", num_images=7, image_size=32, captions_per_image=2)
    samples = as_samples(
        scenes, Views(VLPDataModule(image_size=32).eval_transform), all_captions=True, seed=0
    )
    return evaluate_share(model, samples, Collate(model.tokenize), rank, world_size)


@pytest.mark.ddp
def test_two_ranks_give_the_metrics_of_one(tmp_path) -> None:
    one, two = one_and_two_ranks(rerank_metrics, tmp_path)
    assert any(name.startswith("retrieval_itm/") for name in one)
    assert "compositional/itm_acc" in one
    assert two == pytest.approx(one)
