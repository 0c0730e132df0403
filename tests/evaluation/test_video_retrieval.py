"""Video–text retrieval: clips embedded as their mean-pooled frames, each clip counted once,
against embeddings computed by hand one frame and one caption at a time."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.evaluation.ranks import evaluate_share, one_and_two_ranks
from tests.evaluation.test_rerank import tiny_model
from tests.objectives.flamingo_tiny import open_gates, tiny_data, tiny_flamingo
from tests.objectives.flamingo_tiny import tiny_model as tiny_flamingo_model
from vlp.datamodules.clip_retrieval import ClipRetrievalCollate, to_clip_sample
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.formats.clip_writers import open_written_clips, write_clips, write_video
from vlp.datamodules.formats.clips import ClipManifest
from vlp.datamodules.media_text import as_media_samples
from vlp.datamodules.synthetic.media_text import SyntheticClips, SyntheticDocuments
from vlp.evaluation.captioning import bleu, cider_d
from vlp.evaluation.fewshot import CAPTION
from vlp.evaluation.video_retrieval import video_retrieval_recall
from vlp.flamingo.tokens import IMAGE
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.data2vec import Data2Vec
from vlp.prediction_writer import EmbeddingWriter, GenerationWriter


def test_each_clip_counts_once_however_many_records_carry_its_captions() -> None:
    clips = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # A, A, B, C
    texts = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])  # A, A, B, C
    ids = torch.tensor([7, 7, 3, 9])
    metrics = video_retrieval_recall(clips, ids, texts, ids, ks=(1, 5))
    # every clip's best text is one of its own; A's second caption is closer to C (0.96)
    assert metrics == {"v2t_r1": 1.0, "t2v_r1": 0.75, "v2t_r5": 1.0, "t2v_r5": 1.0}


def hand_recall(similarity: torch.Tensor, match: torch.Tensor, k: int) -> float:
    """Queries (rows) whose best true candidate has fewer than k wrong ones at or above it."""
    hits = 0
    for scores, truth in zip(similarity.tolist(), match.tolist(), strict=True):
        best = max(s for s, t in zip(scores, truth, strict=True) if t)
        hits += sum(s >= best for s, t in zip(scores, truth, strict=True) if not t) < k
    return hits / len(similarity)


def evaluate(model, source, batch_size: int = 4) -> dict[str, float]:
    data = VLPDataModule(
        val=source, batch_size=batch_size, num_workers=0, image_size=32, tokenize=model.tokenize
    )
    for batch in data.val_dataloader():
        model.evaluator.add(batch)
    return model.evaluator.compute(None, None)


@torch.no_grad()
def test_clip_recall_is_that_of_the_mean_of_each_frames_embedding() -> None:
    clips = SyntheticClips("val", 6, num_frames=3, image_size=32)
    model = tiny_model([Contrastive(embed_dim=8)], fusion=None)
    metrics = evaluate(model, clips)
    assert {n for n in metrics if not n.startswith("data/")} == {
        f"video_retrieval/{d}_r{k}" for d in ("v2t", "t2v") for k in (1, 5, 10)
    }
    transform, itc = VLPDataModule(image_size=32).eval_transform, model.objectives[0]
    rows, texts = [], []
    for i in range(len(clips)):
        frames, caption = clips[i].segments
        per_frame = [itc.embed_image(model.encoders.vision(transform(f)[None]))[0] for f in frames]
        mean = torch.stack(per_frame).mean(0)
        rows.append(mean / mean.norm())
        texts.append(itc.embed_text(model.encoders.text(**model.tokenize([caption])))[0])
    similarity = torch.stack(rows) @ torch.stack(texts).T
    match = torch.eye(len(clips), dtype=torch.bool)
    for k in (1, 5):
        assert metrics[f"video_retrieval/v2t_r{k}"] == pytest.approx(
            hand_recall(similarity, match, k)
        )
        assert metrics[f"video_retrieval/t2v_r{k}"] == pytest.approx(
            hand_recall(similarity.T, match.T, k)
        )


def test_captions_of_one_video_and_times_are_one_clip_whichever_rows_they_are_on(
    tmp_path,
) -> None:
    clips = SyntheticClips("val", 2, num_frames=2, image_size=32)
    for i in range(2):
        write_video(tmp_path / f"{i}.mkv", clips[i].segments[0])  # 2 frames: 0.5 s
    rows = [
        {"video": "0.mkv", "caption": ["first", "second"]},
        {"video": "0.mkv", "caption": "third"},  # MSR-VTT style: a row per caption
        {"video": "0.mkv", "caption": "its second half", "start": 0.25},  # another clip
        {"video": "1.mkv", "caption": "x"},
    ]
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = ClipManifest(tmp_path / "clips.jsonl", num_frames=2, on_error="raise")
    model = tiny_model([Contrastive(embed_dim=8)], fusion=None)
    data = VLPDataModule(val=source, batch_size=5, num_workers=0, image_size=32,
                         tokenize=model.tokenize)  # fmt: skip
    batch = next(iter(data.val_dataloader()))
    assert batch["clips"].shape == (5, 2, 3, 32, 32)
    ids = batch["clip_ids"].tolist()
    assert ids[0] == ids[1] == ids[2] and len({ids[0], ids[3], ids[4]}) == 3
    assert torch.equal(batch["text_clip_ids"], batch["clip_ids"])
    model.evaluator.add(batch)
    metrics = model.evaluator.compute(None, None)  # three clips, five captions
    assert metrics["video_retrieval/v2t_r5"] == 1.0 and metrics["video_retrieval/t2v_r5"] == 1.0


def test_bad_clips_are_counted_and_documents_or_a_model_without_a_use_for_clips_refused(
    tmp_path,
) -> None:
    (tmp_path / "clips.jsonl").write_text(json.dumps({"video": "gone.mp4", "caption": "x"}) + "\n")
    model = tiny_model([Contrastive(embed_dim=8)], fusion=None)
    metrics = evaluate(model, ClipManifest(tmp_path / "clips.jsonl"))
    assert metrics["data/skipped_missing"] == 1.0
    assert not any(name.startswith("video_retrieval/") for name in metrics)
    data2vec = tiny_model([Data2Vec(modality="image")], fusion=None)
    data = VLPDataModule(val=SyntheticClips("val", 2, num_frames=2, image_size=32),
                         num_workers=0, image_size=32, tokenize=data2vec.tokenize)  # fmt: skip
    with pytest.raises(ValueError, match="embedding"):
        data2vec.evaluator.add(next(iter(data.val_dataloader())))
    document = SyntheticDocuments("val", 1, image_size=32)[0]
    with pytest.raises(ValueError, match="not a clip"):
        to_clip_sample(document, transform=lambda image: image)


@torch.no_grad()
def test_flamingo_captions_each_clip_once_against_all_its_captions(tmp_path) -> None:
    clips = SyntheticClips("val", 2, num_frames=2, image_size=32)
    model = tiny_flamingo_model([tiny_flamingo()])
    flamingo = model.objectives[0]
    open_gates(flamingo)
    transform = VLPDataModule(image_size=32).eval_transform
    generated = []
    for i in range(2):  # each clip alone, its frames in order (FFV1 keeps them exact)
        frames = torch.stack([transform(f) for f in clips[i].segments[0]])
        visual = flamingo.resample_clips(model.encoders.vision(frames).tokens[None])
        generated += flamingo.generate(visual[:, None], [CAPTION.query], flamingo.fewshot.caption)
        write_video(tmp_path / f"{i}.mkv", clips[i].segments[0])
    assert all(text.split() for text in generated)
    # clip 0's captions: its own generation and another text, in two records
    references = [[generated[0], "a red clip"], ["a blue clip"]]
    rows = [{"video": f"{i}.mkv", "caption": captions} for i, captions in enumerate(references)]
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = ClipManifest(tmp_path / "clips.jsonl", num_frames=2, on_error="raise")
    data = tiny_data(model, val=source, batch_size=2)  # the row's captions in two batches
    for batch in data.val_dataloader():
        model.evaluator.add(batch)
    metrics = model.evaluator.compute(None, None)
    expected = cider_d(generated, references)
    assert expected > 0  # clip 0 scored once, against both its captions
    # no training clips to show: zero-shot only, its text-only demonstrations none
    assert {n for n in metrics if n.startswith("video_caption/")} == {
        "video_caption/cider_0shot",
        "video_caption/bleu4_0shot",
    }
    assert metrics["video_caption/cider_0shot"] == pytest.approx(expected)
    assert metrics["video_caption/bleu4_0shot"] == pytest.approx(bleu(generated, references))
    assert not any(name.startswith("video_retrieval/") for name in metrics)


def clip_metrics(rank: int, world_size: int) -> dict[str, float]:
    model = tiny_model([Contrastive(embed_dim=8)], fusion=None)
    samples = as_media_samples(
        SyntheticClips("val", 7, num_frames=2, image_size=32),
        partial(to_clip_sample, transform=VLPDataModule(image_size=32).eval_transform),
    )
    return evaluate_share(model, samples, ClipRetrievalCollate(model.tokenize), rank, world_size)


@pytest.mark.ddp
def test_two_ranks_give_the_metrics_of_one(tmp_path) -> None:
    one, two = one_and_two_ranks(clip_metrics, tmp_path)
    assert "video_retrieval/t2v_r1" in one
    assert two == pytest.approx(one)


@torch.no_grad()
def test_predict_writes_each_clips_embedding_and_caption(tmp_path) -> None:
    clips = SyntheticClips("val", 3, num_frames=2, image_size=32)
    model = tiny_flamingo_model([tiny_flamingo(), Contrastive(embed_dim=8)])
    flamingo, itc = model.objectives
    open_gates(flamingo)
    data = tiny_data(model, predict=clips, batch_size=3)
    predicted = model.evaluator.predict(next(iter(data.predict_dataloader())))
    EmbeddingWriter(str(tmp_path)).write([predicted], rank=0)
    GenerationWriter(str(tmp_path)).write([predicted], rank=0)
    written = load_file(tmp_path / "embeddings_rank0.safetensors")
    lines = (tmp_path / "generations_rank0.jsonl").read_text().splitlines()
    generations = [json.loads(line) for line in lines]
    assert written["clip_ids"].tolist() == [g["clip_id"] for g in generations]
    assert written["text_clip_ids"].tolist() == written["clip_ids"].tolist()
    for i in range(3):  # each clip alone, one frame at a time
        frames = [data.eval_transform(f)[None] for f in clips[i].segments[0]]
        mean = torch.cat([itc.embed_image(model.encoders.vision(f)) for f in frames]).mean(0)
        assert torch.allclose(written["clip_embeddings"][i], mean / mean.norm(), atol=1e-5)
        tokens = model.encoders.vision(torch.cat(frames)).tokens[None]
        visual = flamingo.resample_clips(tokens)[:, None]
        expected = flamingo.generate(visual, [CAPTION.query], flamingo.fewshot.caption)
        assert generations[i]["caption"] == expected[0]


@torch.no_grad()
def test_streamed_shards_and_manifests_of_the_same_clips_embed_as_the_generator(tmp_path) -> None:
    generated = SyntheticClips("val", 5, num_frames=2, image_size=32)
    records = [generated[i] for i in range(5)]
    sources = [generated]
    for fmt in ("jsonl", "webdataset"):
        path = write_clips(records, tmp_path / fmt, fmt, shard_size=2)
        sources.append(open_written_clips(path, fmt, num_frames=2, on_error="raise"))
    model = tiny_model([Contrastive(embed_dim=8)], fusion=None)
    embedded = []
    for source in sources:
        data = VLPDataModule(predict=source, batch_size=2, num_workers=0, image_size=32,
                             tokenize=model.tokenize)  # fmt: skip
        batches = [model.evaluator.predict(batch) for batch in data.predict_dataloader()]
        embedded.append(
            {
                key: torch.cat([b[key] for b in batches])
                for key in ("clip_embeddings", "clip_text_embeddings")
            }
        )
    for other in embedded[1:]:
        assert all(torch.equal(other[key], embedded[0][key]) for key in other)
    assert evaluate(model, sources[2])["video_retrieval/t2v_r5"] == 1.0  # streamed evaluation


@torch.no_grad()
def test_k_shot_clip_prompts_show_training_clips_before_the_query() -> None:
    model = tiny_flamingo_model([tiny_flamingo()])
    flamingo = model.objectives[0]
    train, val = (
        SyntheticClips(split, 3, num_frames=2, image_size=32) for split in ("train", "val")
    )
    data = tiny_data(model, train=train, val=val, batch_size=3)
    model.trainer = SimpleNamespace(datamodule=data)  # where the evaluator finds the support set
    calls = []

    def recording(visual, prompts, decoding):
        calls.append((visual, prompts))
        return ["a clip"] * len(prompts)

    flamingo.generate = recording
    model.evaluator.add(next(iter(data.val_dataloader())))
    metrics = model.evaluator.compute(None, None)
    assert {"video_caption/cider_0shot", "video_caption/cider_4shot"} <= set(metrics)

    def clip_visual(clip) -> torch.Tensor:
        frames = torch.stack([data.eval_transform(f) for f in clip.segments[0]])
        return flamingo.resample_clips(model.encoders.vision(frames).tokens[None])[0]

    support = [clip_visual(train[i]) for i in range(3)]  # 3 clips: every one is shown
    queries = [clip_visual(val[i]) for i in range(3)]
    visual, prompts = calls[1]  # shots (0, 4, 8): the 4-shot call
    assert visual.shape[:2] == (3, 4)  # 3 demonstrations (all there are) and the query
    for row in range(3):
        assert torch.allclose(visual[row, 3], queries[row], atol=1e-5)
        shown = [
            min(range(3), key=lambda j: (visual[row, d] - support[j]).abs().max()) for d in range(3)
        ]
        assert sorted(shown) == [0, 1, 2]
        for d, j in enumerate(shown):
            assert torch.allclose(visual[row, d], support[j], atol=1e-5)
        captions = [train[j].segments[1] for j in shown]
        assert prompts[row].count(IMAGE) == 4
        assert [prompts[row].index(c) for c in captions] == sorted(
            prompts[row].index(c) for c in captions
        )
