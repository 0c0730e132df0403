"""A tiny Flamingo model through Lightning: validation logs the few-shot caption and VQA
metrics, and ``predict`` writes a JSONL of captions and answers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.objectives.flamingo_tiny import IMAGE_SIZE, tiny_data, tiny_flamingo, tiny_model
from tests.tiny import quiet_trainer
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.evaluation.fewshot import FewShotConfig
from vlp.flamingo.generation import Decoding
from vlp.prediction_writer import EmbeddingWriter, GenerationWriter

FEWSHOT = FewShotConfig(
    shots=(0, 2),
    max_samples=6,
    support_size=8,
    caption=Decoding(max_new_tokens=4, num_beams=2),
    vqa=Decoding(max_new_tokens=2, num_beams=1),
)


def _scenes(split: str, count: int) -> SyntheticScenes:
    return SyntheticScenes(split, count, image_size=IMAGE_SIZE)


def test_validation_logs_caption_and_vqa_metrics_for_every_k():
    model = tiny_model([tiny_flamingo(fewshot=FEWSHOT)])
    data = tiny_data(model, train=_scenes("train", 8), val=_scenes("val", 8))
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    for k in (0, 2):
        assert metrics[f"val/caption/cider_{k}shot"] >= 0
        assert 0 <= metrics[f"val/caption/bleu4_{k}shot"] <= 1
        assert 0 <= metrics[f"val/vqa/acc_{k}shot"] <= 1
    assert "val/caption/cider_8shot" not in metrics


def test_predict_writes_captions_and_answers_as_jsonl(tmp_path: Path):
    model = tiny_model([tiny_flamingo(fewshot=FEWSHOT)])
    data = tiny_data(model, predict=_scenes("test", 3))
    writers = [GenerationWriter(str(tmp_path)), EmbeddingWriter(str(tmp_path))]
    quiet_trainer(callbacks=writers).predict(model, data, return_predictions=False)
    rows = [json.loads(line) for line in (tmp_path / "generations_rank0.jsonl").open()]
    scenes = _scenes("test", 3)
    assert [row["image_id"] for row in rows] == [scenes[i].image_id for i in range(3)]
    for row, i in zip(rows, range(3), strict=True):
        questions = [qa["question"] for qa in scenes[i].meta["questions"]]
        assert [a["question"] for a in row["answers"]] == questions
        assert isinstance(row["caption"], str)
    assert not (tmp_path / "embeddings_rank0.safetensors").exists()  # no embedding objective
