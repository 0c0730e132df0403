"""Zero-shot classification with learned prompts (CoOp) beside the hand-written templates."""

from __future__ import annotations

import pytest
import torch

from tests.objectives.test_coop import coop_model
from tests.tiny import quiet_trainer
from vlp.datamodules.datamodule import VLPDataModule
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.captions import CLASS_NAMES
from vlp.evaluation.zeroshot import zeroshot_accuracy

HAND = "a photo of a {}."


def test_context_set_to_the_hand_phrase_scores_like_the_single_hand_template() -> None:
    model = coop_model(init_text="a photo of a")
    val = SyntheticScenes("val", 12, image_size=32)
    val.prompt_templates = (HAND,)
    data = VLPDataModule(val=val, batch_size=6, num_workers=0, image_size=32)
    data.tokenize = model.tokenize
    (metrics,) = quiet_trainer().validate(model, data, verbose=False)
    assert metrics["val/zeroshot/acc"] == metrics["val/zeroshot/acc_hand"]
    evaluator, text = model.evaluator, model.encoders.text
    with torch.no_grad():
        learned = model.objectives[1].class_embeddings(text, evaluator.embedder.embed_text)
    assert torch.equal(learned, evaluator._class_embeddings(list(CLASS_NAMES), [HAND]))


def test_accuracy_is_the_learned_prompts_and_acc_hand_the_templates() -> None:
    model = coop_model(num_context=3)
    evaluator, text = model.evaluator, model.encoders.text
    with torch.no_grad():
        learned = model.objectives[1].class_embeddings(text, evaluator.embedder.embed_text)
    labels = torch.arange(len(CLASS_NAMES))
    images = learned  # each image sits on its class's learned prompt: all right
    metrics = evaluator._zeroshot(images, labels, list(CLASS_NAMES), [HAND])
    hand = evaluator._class_embeddings(list(CLASS_NAMES), [HAND])
    assert metrics["zeroshot/acc"] == 1.0
    assert metrics["zeroshot/acc_hand"] == zeroshot_accuracy(images, hand, labels)
    assert metrics["zeroshot/acc_hand"] < 1.0  # random context: not the hand prompts
    only_learned = evaluator._zeroshot(images, labels, None, None)
    assert only_learned == {"zeroshot/acc": 1.0}


def test_classes_of_the_data_must_be_those_of_the_prompts() -> None:
    model = coop_model(num_context=2)
    other = list(reversed(CLASS_NAMES))
    with pytest.raises(ValueError, match="differ from the learned prompts"):
        model.evaluator._zeroshot(torch.eye(6, 8), torch.arange(6), other, [HAND])
