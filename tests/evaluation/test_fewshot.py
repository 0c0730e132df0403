"""Few-shot prompts, demonstration choice (random, RICES), the support set, and the epoch
loop of few-shot captioning/VQA with a stand-in generator."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils.data import IterableDataset
from transformers import AutoTokenizer

from vlp.datamodules.datamodule import EvalShardSampler, VLPDataModule
from vlp.datamodules.kshot import KShot, record_labels
from vlp.datamodules.records import ImageTextRecord, SkippedRecord
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.encoders.text import MINILM
from vlp.encoding import Encoding
from vlp.evaluation import generative
from vlp.evaluation.fewshot import (
    CAPTION,
    VQA,
    FewShotConfig,
    few_shot_prompt,
    random_demos,
    rices_demos,
    stack_visual,
    support_records,
)
from vlp.evaluation.generative import FewShotEvaluation
from vlp.flamingo import add_flamingo_tokens
from vlp.flamingo.generation import Decoding
from vlp.paths import resolve_model_path


def test_caption_prompt_is_k_demonstrations_then_the_query_image():
    demos = [{"caption": "a red circle"}, {"caption": "a blue square"}]
    assert few_shot_prompt(CAPTION, demos, {}) == (
        "<image>a red circle<|endofchunk|><image>a blue square<|endofchunk|><image>"
    )
    assert few_shot_prompt(CAPTION, [], {}) == "<image>"


def test_vqa_prompt_and_zero_shot_demonstrations_without_images():
    demos = [{"question": "what colour?", "answer": "red"}]
    query = {"question": "how many?"}
    assert few_shot_prompt(VQA, demos, query) == (
        "<image>Question:what colour? Short answer:red<|endofchunk|>"
        "<image>Question:how many? Short answer:"
    )
    assert few_shot_prompt(VQA, demos, query, with_images=False) == (
        "Question:what colour? Short answer:red<|endofchunk|><image>Question:how many? Short answer:"
    )


def test_tags_written_in_demonstrations_and_queries_stay_text():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    tokens = add_flamingo_tokens(tokenizer)

    def count(prompt: str, token: int) -> int:
        return tokenizer(prompt)["input_ids"].count(token)

    demos = [{"question": "is <image> a tag?", "answer": "<|endofchunk|>"}]
    prompt = few_shot_prompt(VQA, demos, {"question": "and <image>?"})
    assert count(prompt, tokens.image) == 2 and count(prompt, tokens.end_of_chunk) == 1
    zero_shot = few_shot_prompt(CAPTION, [{"caption": "an <image> tag"}] * 2, {}, with_images=False)
    assert count(zero_shot, tokens.image) == 1 and count(zero_shot, tokens.end_of_chunk) == 2
    assert zero_shot.count("image") == 3  # the captions' tags are kept as their words


def test_random_demonstrations_are_distinct_and_fixed_by_seed_and_query():
    picked = random_demos(10, 4, seed=0, query_id=7)
    assert len(set(picked)) == 4 and all(0 <= i < 10 for i in picked)
    assert picked == random_demos(10, 4, seed=0, query_id=7)
    others = [random_demos(10, 4, seed=s, query_id=q) for s, q in ((1, 7), (0, 8), (0, 9))]
    assert any(o != picked for o in others)
    assert sorted(random_demos(3, 5, seed=0, query_id=1)) == [0, 1, 2]  # a small pool: all of it


def test_rices_picks_the_most_similar_support_images_most_similar_last():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [2.0, 0.2]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    # cosines with query 0: 1, 0, .71, -1, .995; with query 1: 0, 1, .71, 0, .0995
    assert rices_demos(queries, pool, 3).tolist() == [[2, 4, 0], [4, 2, 1]]


def test_visual_tokens_of_a_prompt_are_its_demos_then_its_query():
    support = torch.arange(5.0)[:, None, None].expand(5, 2, 3)
    query = torch.full((2, 2, 3), -1.0)
    stacked = stack_visual(support, torch.tensor([[3, 1], [0, 4]]), query)
    assert stacked.shape == (2, 3, 2, 3)
    assert stacked[:, :, 0, 0].tolist() == [[3, 1, -1], [0, 4, -1]]


def _record(i: int, questions: list | None = None) -> ImageTextRecord:
    meta = {} if questions is None else {"questions": questions}
    return ImageTextRecord(
        Image.new("RGB", (8, 8), (i, 0, 0)), (f"caption {i}", "other"), i, meta=meta
    )


def training_on(source) -> SimpleNamespace:
    """A stand-in data module whose training data is ``source``."""
    return SimpleNamespace(train_source=lambda: source, mixture=[])


class Stream(IterableDataset):
    def __iter__(self):
        yield SkippedRecord("corrupt", "x")
        yield from (_record(i) for i in range(10))


def test_support_is_a_seeded_subset_of_the_training_split_without_bad_records():
    source = [_record(i) for i in range(20)]
    source[3] = SkippedRecord("corrupt", "x")
    datamodule = training_on(source)
    picked = [r.image_id for r in support_records(datamodule, 8, seed=0)]
    assert picked == [r.image_id for r in support_records(datamodule, 8, seed=0)]
    assert 7 <= len(picked) <= 8 and picked == sorted(picked) and 3 not in picked
    assert picked != [r.image_id for r in support_records(datamodule, 8, seed=1)]
    streamed = training_on(Stream())
    assert [r.image_id for r in support_records(streamed, 4, seed=0)] == [0, 1, 2]
    assert support_records(training_on(None), 4, 0) == []
    assert support_records(None, 4, 0) == []


def test_support_under_kshot_is_the_images_a_prompt_was_tuned_on():
    train = SyntheticScenes("train", 40, image_size=32)
    kshot = KShot(k=1, seed=3)
    datamodule = VLPDataModule(train=train, num_workers=0, image_size=32, kshot=kshot)
    tuned_on = {train[i].image_id for i in kshot.subset(train).indices}
    assert len(tuned_on) == len(set(record_labels(train)))
    assert {r.image_id for r in support_records(datamodule, 2048, seed=0)} == tuned_on


class EchoGenerator:
    """Generates the number of images and the prompt it was given; resampling is identity."""

    def __init__(self, fewshot: FewShotConfig) -> None:
        self.fewshot = fewshot
        self.calls: list[tuple[tuple[int, ...], list[str], Decoding]] = []

    def resample_images(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return image_tokens

    def resample_clips(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        return frame_tokens.flatten(1, 2)  # a clip of one frame: that frame's tokens

    def generate(self, visual, prompts, decoding) -> list[str]:
        self.calls.append((tuple(visual.shape), list(prompts), decoding))
        return ["caption 0" if "Question" not in p else "red" for p in prompts]


def _vision(images: torch.Tensor) -> Encoding:
    tokens = images.flatten(2).transpose(1, 2)[:, :2]  # [B, 2, 3] "patches"
    return Encoding(pooled=tokens.mean(1), tokens=tokens)


def _pixels(value: float) -> torch.Tensor:
    """A 2×2 image whose features point at angle value/100 (the support's red channel)."""
    angle = torch.tensor(value / 100)
    return torch.stack([angle.cos(), angle.sin(), torch.tensor(0.0)])[:, None, None].expand(3, 2, 2)


def _evaluation(config: FewShotConfig, support: list[ImageTextRecord]):
    generator = EchoGenerator(config)
    transform = lambda image: _pixels(image.getpixel((0, 0))[0])  # noqa: E731
    datamodule = training_on(support)
    datamodule.eval_transform = transform
    vision = torch.nn.Module()
    vision.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    vision.forward = _vision
    return generator, FewShotEvaluation(generator, vision, lambda e: e.pooled, lambda: datamodule)


def _batch(ids: list[int]) -> dict:
    images = torch.stack([_pixels(i) for i in ids])
    return {
        "images": images,
        "image_ids": torch.tensor(ids),
        "captions": [[f"caption {i}", "a thing"] for i in ids],
        "questions": [[{"question": "what colour is it?", "answer": "red"}] for _ in ids],
    }


def test_each_k_generates_captions_and_answers_with_k_demo_images():
    qa = [{"question": "what shape?", "answer": "circle"}]
    support = [_record(i, qa if i % 2 else None) for i in range(6)]
    config = FewShotConfig(shots=(0, 2), text_only_demos=1, support_size=6)
    generator, evaluation = _evaluation(config, support)
    batch = _batch([100, 101, 102])
    evaluation.add(batch, _vision(batch["images"]))
    shapes = [shape for shape, _, _ in generator.calls]
    assert shapes == [(3, 1, 2, 3), (3, 1, 2, 3), (3, 3, 2, 3), (3, 3, 2, 3)]
    (_, zero_shot, decoding), (_, zero_vqa, _), (_, two_shot, _), (_, two_vqa, vqa_decoding) = (
        generator.calls
    )
    assert decoding == config.caption and vqa_decoding == config.vqa
    assert all(p.count("<image>") == 1 and p.endswith("<|endofchunk|><image>") for p in zero_shot)
    assert all(p.count("<image>") == 3 and p.count("<|endofchunk|>") == 2 for p in two_shot)
    # VQA demonstrations come only from support images that have questions
    assert all(
        p.count("what shape?") == 2 and p.endswith("what colour is it? Short answer:")
        for p in two_vqa
    )
    assert all("what shape?" in p and p.count("<image>") == 1 for p in zero_vqa)
    metrics = evaluation.compute()
    assert set(metrics) == {
        f"{m}_{k}shot" for m in ("caption/cider", "caption/bleu4", "vqa/acc") for k in (0, 2)
    }
    assert metrics["vqa/acc_2shot"] == 1.0
    assert evaluation.compute() == {}  # reset after computing


def test_bare_zero_shot_also_scores_the_query_alone():
    qa = [{"question": "what shape?", "answer": "circle"}]
    support = [_record(i, qa) for i in range(4)]
    config = FewShotConfig(shots=(0,), text_only_demos=2, support_size=4, bare_zero_shot=True)
    generator, evaluation = _evaluation(config, support)
    batch = _batch([100, 101])
    evaluation.add(batch, _vision(batch["images"]))
    (_, demos, _), (_, demos_vqa, _), (_, bare, _), (_, bare_vqa, _) = generator.calls
    assert all(p.count("<|endofchunk|>") == 2 and p.endswith("<image>") for p in demos)
    assert all(p.count("what shape?") == 2 for p in demos_vqa)
    assert bare == ["<image>", "<image>"]
    assert bare_vqa == ["<image>Question:what colour is it? Short answer:"] * 2
    metrics = evaluation.compute()
    assert set(metrics) == {
        f"{m}_{label}" for m in ("caption/cider", "caption/bleu4", "vqa/acc")
        for label in ("0shot", "0shot_bare")
    }  # fmt: skip
    # nothing to add without text-only demonstrations, or without zero shots
    for shots, text_only in [((0,), 0), ((2,), 2)]:
        config = FewShotConfig(shots, text_only_demos=text_only, support_size=4,
                               bare_zero_shot=True)  # fmt: skip
        generator, evaluation = _evaluation(config, support)
        evaluation.add(batch, _vision(batch["images"]))
        assert len(generator.calls) == 2
        assert not any(key.endswith("_bare") for key in evaluation.compute())


def test_rices_demonstrations_are_the_support_images_closest_to_the_query():
    support = [_record(i * 40) for i in range(6)]  # pixel values 0, 40, ..., 200
    config = FewShotConfig(shots=(2,), rices=True, support_size=6)
    generator, evaluation = _evaluation(config, support)
    batch = _batch([45, 190])
    batch["questions"] = [[], []]
    evaluation.add(batch, _vision(batch["images"]))
    ((_, prompts, _),) = generator.calls
    # angles 0.45 and 1.9 against 0, 0.4, ..., 2.0: the two closest, the closest last
    assert prompts == [
        "<image>caption 80<|endofchunk|><image>caption 40<|endofchunk|><image>",
        "<image>caption 160<|endofchunk|><image>caption 200<|endofchunk|><image>",
    ]


def test_max_samples_caps_the_generated_images_and_k_needs_a_support_set():
    config = FewShotConfig(shots=(0, 4), max_samples=3, text_only_demos=2)
    generator, evaluation = _evaluation(config, support=[])
    for ids in ([1, 2], [3, 4], [5, 6]):
        batch = _batch(ids)
        evaluation.add(batch, _vision(batch["images"]))
    # without a support set: zero-shot only, with no demonstrations; 2 + 1 images in all
    assert [shape[0] for shape, _, _ in generator.calls] == [2, 2, 1, 1]
    assert all(p in ("<image>", "<image>Question:what colour is it? Short answer:")
               for _, prompts, _ in generator.calls for p in prompts)  # fmt: skip
    assert set(evaluation.compute()) == {
        "caption/cider_0shot",
        "caption/bleu4_0shot",
        "vqa/acc_0shot",
    }


class IdRecorder(EchoGenerator):
    """Records the image ids it generates for (the test encodes an image's id as its tokens)."""

    def __init__(self, fewshot: FewShotConfig) -> None:
        super().__init__(fewshot)
        self.image_ids: list[int] = []

    def resample_images(self, image_tokens: torch.Tensor) -> torch.Tensor:
        self.image_ids += [int(i) for i in image_tokens[:, 0, 0]]
        return image_tokens


@pytest.mark.parametrize(("max_samples", "world_size"), [(64, 3), (5, 3), (2, 3), (7, 1)])
def test_max_samples_under_ddp_are_the_first_images_of_the_split(
    monkeypatch, max_samples, world_size
):
    split = list(range(100))
    generated = []
    for rank in range(world_size):
        monkeypatch.setattr(generative, "world", lambda rank=rank: (rank, world_size))
        generator = IdRecorder(FewShotConfig(shots=(0,), text_only_demos=0,
                                             max_samples=max_samples))  # fmt: skip
        evaluation = FewShotEvaluation(generator, torch.nn.Linear(1, 1), lambda e: e.pooled,
                                       lambda: None)  # fmt: skip
        share = list(EvalShardSampler(split, num_replicas=world_size, rank=rank, shuffle=False))
        for start in range(0, len(share), 4):
            ids = share[start : start + 4]
            batch = _batch(ids)
            tokens = torch.tensor(ids, dtype=torch.float)[:, None, None].expand(-1, 2, 3)
            evaluation.add(batch, Encoding(pooled=tokens[:, 0], tokens=tokens))
        generated += generator.image_ids
    assert sorted(generated) == list(range(max_samples))


def test_predict_writes_a_zero_shot_caption_and_an_answer_per_question():
    _, evaluation = _evaluation(FewShotConfig(), support=[])
    batch = _batch([7, 8])
    batch["questions"][1] = []
    rows = evaluation.predict(batch, _vision(batch["images"]))
    assert rows == [
        {
            "image_id": 7,
            "caption": "caption 0",
            "answers": [{"question": "what colour is it?", "answer": "red"}],
        },
        {"image_id": 8, "caption": "caption 0", "answers": []},
    ]


def test_predicted_questions_that_write_a_tag_keep_one_image_per_prompt():
    generator, evaluation = _evaluation(FewShotConfig(), support=[])
    batch = _batch([7])
    batch["questions"][0] = [{"question": "what is <image> in html?", "answer": "a tag"}]
    evaluation.predict(batch, _vision(batch["images"]))
    (_, captions, _), (_, questions, _) = generator.calls
    assert [p.count("<image>") for p in captions + questions] == [1, 1]


def test_vqa_needs_support_images_with_questions_for_k_shots():
    config = FewShotConfig(shots=(0, 2), support_size=4)
    _, evaluation = _evaluation(config, support=[_record(i) for i in range(4)])  # no questions
    batch = _batch([1, 2])
    evaluation.add(batch, _vision(batch["images"]))
    assert {name for name in evaluation.compute() if name.startswith("vqa/")} == {"vqa/acc_0shot"}
