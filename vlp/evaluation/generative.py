"""Few-shot captioning and VQA over an evaluation epoch, for an objective that writes text.

Metric names, logged under ``val/`` or ``test/`` for each k of ``FewShotConfig.shots``:
``caption/cider_{k}shot`` and ``caption/bleu4_{k}shot`` (against all of an image's
captions) and ``vqa/acc_{k}shot`` (one question per image, chosen by the seed, when the
data has questions). A generator with learned prompts (P-tuning) also writes with its
templates, scored as ``caption/{cider,bleu4}_ptuned`` and ``vqa/acc_ptuned``. Each rank
generates for its share of the images; the strings of all ranks are gathered and every
rank scores the whole corpus, as CIDEr's IDF needs. When the split is clips, each clip is
captioned with the same prompts, its demonstrations clips of the training data (the first
clip part of a mixture), and scored once against all its captions as
``video_caption/{cider,bleu4}_{k}shot``.
k-shot prompts with k > 0 need a support set from the training data; without one
only zero-shot prompts (with no demonstrations) are evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from vlp.datamodules.media_text import Medium, clip_of
from vlp.datamodules.samples import question_pairs
from vlp.distributed import gather_objects, world
from vlp.encoders import VisionEncoder
from vlp.encoding import Encoding
from vlp.evaluation.captioning import bleu, cider_d
from vlp.evaluation.fewshot import (
    CAPTION,
    VQA,
    FewShotConfig,
    Template,
    few_shot_prompt,
    pick,
    random_demos,
    rices_demos,
    stack_visual,
    support_clips,
    support_records,
)
from vlp.evaluation.vqa import answer_from_generation, vqa_accuracy
from vlp.flamingo.generation import Decoding

Result = tuple[str, list[str]]  # (generated text, reference texts)


class Generator(Protocol):
    """An objective that writes text about images (Flamingo)."""

    fewshot: FewShotConfig

    def resample_images(self, image_tokens: Tensor) -> Tensor: ...

    def resample_clips(self, frame_tokens: Tensor) -> Tensor: ...

    def generate(self, visual: Tensor, prompts: Sequence[str], decoding: Decoding) -> list[str]: ...


class PromptedGenerator(Generator, Protocol):
    """A generator with learned prompts for some tasks (``caption``, ``vqa``)."""

    tasks: tuple[str, ...]

    def generate_prompted(
        self, task: str, visual: Tensor, queries: Sequence[dict[str, str]], decoding: Decoding
    ) -> list[str]: ...


@dataclass(frozen=True)
class Support:
    """The pool demonstrations come from, encoded once per evaluation epoch."""

    visual: Tensor  # [S, n, D] each image's visual tokens
    features: Tensor  # [S, D] what RICES compares
    captions: list[str]  # each image's first caption (OpenFlamingo's demo caption)
    questions: list[list[dict[str, str]]]

    def __len__(self) -> int:
        return len(self.captions)

    def with_questions(self) -> list[int]:
        return [i for i, qa in enumerate(self.questions) if qa]


class FewShotEvaluation:
    """Generates captions and answers for the evaluation images, k shots at a time.

    Args:
        generator: the objective that writes text.
        vision: the vision encoder, for the support images.
        image_features: what RICES compares: an image encoding → [B, D].
        datamodule: returns the data module (or None), whose training data holds
            the support set and whose evaluation transform prepares it.
    """

    def __init__(
        self,
        generator: Generator,
        vision: VisionEncoder,
        image_features: Callable[[Encoding], Tensor],
        datamodule: Callable[[], Any],
    ) -> None:
        self.generator = generator
        self.config = generator.fewshot
        self.vision = vision
        self.image_features = image_features
        self.datamodule = datamodule
        self._reset()

    def _reset(self) -> None:
        self._support: Support | None = None
        self._clip_support: Support | None = None
        self._images_done = 0
        self._results: dict[str, list[Result]] = {}
        # per prompt setting: (clip id, generated, reference) of every clip record
        self._clip_captions: dict[str, list[tuple[int, str, str]]] = {}

    def add(self, batch: dict[str, Any], image: Encoding) -> None:
        """Generate for this batch's images (up to this rank's share of ``max_samples``)."""
        n = min(len(batch["images"]), self._quota())
        if n == 0:
            return
        self._images_done += n
        ids = batch["image_ids"][:n].tolist()
        visual = self.generator.resample_images(image.tokens[:n])
        features = self.image_features(image)[:n]
        support = self._support_set()
        refs = [list(captions) for captions in batch["captions"][:n]]
        asked = [(i, pick(qa, self.config.seed, ids[i])) for i, qa in
                 enumerate(batch["questions"][:n]) if qa]  # fmt: skip
        for label, k, text_only in self._prompt_settings():
            if k > 0 and len(support) == 0:
                continue
            captions = self._task(CAPTION, k, text_only, ids, visual, features, [{}] * n,
                                  support, None)  # fmt: skip
            self._record(f"caption/{label}", captions, refs)
            if asked and (k == 0 or support.with_questions()):  # k demos need questions
                rows = [i for i, _ in asked]
                queries = [{"question": qa["question"]} for _, qa in asked]
                answers = self._task(VQA, k, text_only, [ids[i] for i in rows], visual[rows],
                                     features[rows], queries, support, support.with_questions())  # fmt: skip
                self._record(f"vqa/{label}", answers, [[qa["answer"]] for _, qa in asked])
        if hasattr(self.generator, "generate_prompted"):
            self._add_prompted(self.generator, visual, refs, asked)

    def add_clips(self, batch: dict[str, Any], frames: Encoding) -> None:
        """Captions for this batch's clips, k shots at a time, from their frames' encoding
        (clip after clip, frame after frame; up to this rank's share of ``max_samples``).
        Demonstrations are clips of the training data, chosen as images' are."""
        num_clips, num_frames = batch["clips"].shape[:2]
        n = min(num_clips, self._quota())
        if n == 0:
            return
        self._images_done += n
        visual, features = self._clip_visual(frames, num_frames)
        visual, features = visual[:n], features[:n]
        ids = batch["clip_ids"][:n].tolist()
        references = [captions_of_clip[0] for captions_of_clip in batch["captions"][:n]]
        support = self._clip_support_set()
        for label, k, text_only in self._prompt_settings():
            if k > 0 and len(support) == 0:
                continue
            captions = self._task(CAPTION, k, text_only, ids, visual, features, [{}] * n,
                                  support, None)  # fmt: skip
            rows = zip(ids, captions, references, strict=True)
            self._clip_captions.setdefault(label, []).extend(rows)

    @torch.no_grad()
    def predict_clips(self, batch: dict[str, Any], frames: Encoding) -> list[dict[str, Any]]:
        """A zero-shot caption for every clip (the caption prompt alone)."""
        visual, _ = self._clip_visual(frames, batch["clips"].shape[1])
        prompts = [CAPTION.query] * len(visual)
        captions = self.generator.generate(visual[:, None], prompts, self.config.caption)
        ids = batch["clip_ids"].tolist()
        return [{"clip_id": i, "caption": c} for i, c in zip(ids, captions, strict=True)]

    def _clip_visual(self, frames: Encoding, num_frames: int) -> tuple[Tensor, Tensor]:
        """Each clip's visual tokens [B, n, D] (its frames resampled together, with their
        time embeddings) and what RICES compares [B, D] (its frames' features, averaged)."""
        tokens = frames.tokens.unflatten(0, (-1, num_frames))
        features = self.image_features(frames).unflatten(0, (-1, num_frames)).mean(dim=1)
        return self.generator.resample_clips(tokens), features

    def _prompt_settings(self) -> list[tuple[str, int, int]]:
        """(metric label, demonstrations with images, text-only demonstrations) per prompt kind."""
        config = self.config
        settings = [(f"{k}shot", k, 0 if k else config.text_only_demos) for k in config.shots]
        if 0 in config.shots and config.bare_zero_shot and config.text_only_demos:
            settings.append(("0shot_bare", 0, 0))
        return settings

    def _add_prompted(
        self,
        generator: PromptedGenerator,
        visual: Tensor,
        refs: list[list[str]],
        asked: list[tuple[int, dict[str, str]]],
    ) -> None:
        """Captions and answers from the learned prompts' templates, for the same images and
        questions as the hand prompts'."""
        if "caption" in generator.tasks:
            queries = [{}] * len(refs)
            captions = generator.generate_prompted(
                "caption", visual[:, None], queries, self.config.caption
            )
            self._record("caption/ptuned", captions, refs)
        if asked and "vqa" in generator.tasks:
            rows = [i for i, _ in asked]
            queries = [{"question": qa["question"]} for _, qa in asked]
            answers = generator.generate_prompted(
                "vqa", visual[rows][:, None], queries, self.config.vqa
            )
            self._record("vqa/ptuned", answers, [[qa["answer"]] for _, qa in asked])

    def _quota(self) -> int:
        """Images this rank may still generate for: its items among the split's first
        ``max_samples``, which under ``EvalShardSampler`` are ``rank, rank + W, ...``."""
        if self.config.max_samples is None:
            return 1 << 62
        rank, world_size = world()
        share = len(range(rank, self.config.max_samples, world_size))
        return max(share - self._images_done, 0)

    def _task(
        self,
        template: Template,
        k: int,
        text_only: int,
        ids: list[int],
        visual: Tensor,
        features: Tensor,
        queries: list[dict[str, str]],
        support: Support,
        pool: list[int] | None,
    ) -> list[str]:
        """k-shot prompts (zero-shot: ``text_only`` demonstrations without their images) for
        the queries, and their generated continuations."""
        pool = list(range(len(support))) if pool is None else pool
        shown = k if k > 0 else text_only
        demos = self._demos(shown, ids, features, support, pool)
        prompts = [
            few_shot_prompt(
                template,
                [self._demo(template, support, j, query_id) for j in row],
                query,
                with_images=k > 0,
            )
            for row, query, query_id in zip(demos, queries, ids, strict=True)
        ]
        if k > 0:
            index = torch.tensor(demos, dtype=torch.long, device=visual.device)
            visual = stack_visual(support.visual, index, visual)
        else:
            visual = visual[:, None]
        decoding = self.config.caption if template is CAPTION else self.config.vqa
        return self.generator.generate(visual, prompts, decoding)

    def _demos(
        self, k: int, ids: list[int], features: Tensor, support: Support, pool: list[int]
    ) -> list[list[int]]:
        """Each query's k support indices, in prompt order."""
        if k == 0 or not pool:
            return [[] for _ in ids]
        if self.config.rices:
            picked = rices_demos(features, support.features[pool], k).tolist()
        else:
            picked = [random_demos(len(pool), k, self.config.seed, i) for i in ids]
        return [[pool[i] for i in row] for row in picked]

    def _demo(self, template: Template, support: Support, j: int, query_id: int) -> dict[str, str]:
        if template is CAPTION:
            return {"caption": support.captions[j]}
        return pick(support.questions[j], self.config.seed, f"{query_id}:{j}")

    def _record(self, key: str, generated: list[str], references: list[list[str]]) -> None:
        self._results.setdefault(key, []).extend(zip(generated, references, strict=True))

    def _support_set(self) -> Support:
        if self._support is None:
            records = support_records(self.datamodule(), self.config.support_size, self.config.seed)
            media = [(r.image,) for r in records]
            captions = [r.captions[0] for r in records]
            self._support = self._encode_support(
                media, captions, [question_pairs(r.meta) for r in records]
            )
        return self._support

    def _clip_support_set(self) -> Support:
        if self._clip_support is None:
            records = support_clips(self.datamodule(), self.config.support_size, self.config.seed)
            clips = [clip_of(record) for record in records]
            media, captions = [m for m, _ in clips], [c for _, c in clips]
            self._clip_support = self._encode_support(media, captions, [[] for _ in clips])
        return self._clip_support

    @torch.no_grad()
    def _encode_support(
        self,
        media: list[Medium],
        captions: list[str],
        questions: list[list[dict[str, str]]],
        batch_size: int = 64,
    ) -> Support:
        """Each support image or clip (``media``: its frames) as visual tokens and the
        features RICES compares, as the queries are."""
        transform = getattr(self.datamodule(), "eval_transform", None)
        if not media or transform is None:
            return Support(torch.empty(0), torch.empty(0), [], [])
        device = next(self.vision.parameters()).device
        visual, features = [], []
        for start in range(0, len(media), batch_size):
            chunk = media[start : start + batch_size]
            frames = torch.stack([torch.stack([transform(f) for f in m]) for m in chunk])
            encoding = self.vision(frames.flatten(0, 1).to(device))
            chunk_visual, chunk_features = self._clip_visual(encoding, frames.shape[1])
            visual.append(chunk_visual)
            features.append(chunk_features)
        return Support(torch.cat(visual), torch.cat(features), captions, questions)

    def compute(self) -> dict[str, float]:
        """Metrics over everything generated since the last call, on all ranks; then reset."""
        results = _gathered(self._results)
        clips = _gathered(self._clip_captions)
        self._reset()
        metrics = {}
        for label in sorted(clips):
            generated, references = zip(*_by_clip(clips[label]), strict=True)
            metrics[f"video_caption/cider_{label}"] = cider_d(generated, references)
            metrics[f"video_caption/bleu4_{label}"] = bleu(generated, references)
        for key in sorted(results):
            task, prompts = key.split("/")  # prompts: "{k}shot" or "ptuned"
            generated, references = zip(*results[key], strict=True)
            if task == "caption":
                metrics[f"caption/cider_{prompts}"] = cider_d(generated, references)
                metrics[f"caption/bleu4_{prompts}"] = bleu(generated, references)
            else:
                answers = [answer_from_generation(text) for text in generated]
                metrics[f"vqa/acc_{prompts}"] = vqa_accuracy(answers, references)
        return metrics

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], image: Encoding) -> list[dict[str, Any]]:
        """A zero-shot caption for every image, and an answer to each of its questions."""
        visual = self.generator.resample_images(image.tokens)
        captions = self.generator.generate(
            visual[:, None], [CAPTION.query] * len(visual), self.config.caption
        )
        rows = [{"image_id": int(i), "caption": c, "answers": []}
                for i, c in zip(batch["image_ids"].tolist(), captions, strict=True)]  # fmt: skip
        asked = [(row, qa) for row, qas in enumerate(batch["questions"]) for qa in qas]
        if asked:
            which = [row for row, _ in asked]
            prompts = [few_shot_prompt(VQA, [], {"question": qa["question"]}) for _, qa in asked]
            answers = self.generator.generate(visual[which][:, None], prompts, self.config.vqa)
            for (row, qa), answer in zip(asked, answers, strict=True):
                rows[row]["answers"].append(
                    {"question": qa["question"], "answer": answer_from_generation(answer)}
                )
        return rows


def _gathered(results: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Every rank's results, in rank order (strings travel as Python objects)."""
    merged: dict[str, list[Any]] = {}
    for part in gather_objects(results):
        for key, values in part.items():
            merged.setdefault(key, []).extend(values)
    return merged


def _by_clip(rows: list[tuple[int, str, str]]) -> list[Result]:
    """One (generated, references) per clip: a clip with several captions came as several
    records, each captioned alike (greedy or seeded decoding); all are its references."""
    clips: dict[int, Result] = {}
    for clip, generated, reference in rows:
        clips.setdefault(clip, (generated, []))[1].append(reference)
    return list(clips.values())
