"""CoOp objective: the loss by hand, prompt-only training of a frozen contrastive model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torch.optim import AdamW

from tests.tiny import TINY_TEXT, TINY_VISION, quiet_trainer, tiny_data
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.captions import CLASS_NAMES
from vlp.encoders import TextEncoder, VisionEncoder
from vlp.module import VLPModule
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.coop import CoOp

CONTEXT = "objectives.1.prompt.context"


def coop_model(**coop_options) -> VLPModule:
    """ITC (weight 0, defines the space) and CoOp; AdamW with strong weight decay, which
    would move any frozen weight that reached the optimizer."""
    torch.manual_seed(0)
    return VLPModule(
        VisionEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=TINY_VISION),
        TextEncoder(config=TINY_TEXT, max_length=16),
        [Contrastive(weight=0.0, embed_dim=8), CoOp(list(CLASS_NAMES), **coop_options)],
        optimizer=lambda params: AdamW(params, lr=1e-2, weight_decay=0.5),
    )


def test_loss_is_the_cross_entropy_of_scaled_cosines_by_hand() -> None:
    model = coop_model(num_context=3).eval()
    contrastive, coop = model.objectives
    with torch.no_grad():
        coop.prompt.context.normal_()
        contrastive.temperature.fill_(0.2)
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 5, 2, -1])  # the last image is unlabelled: no loss
    terms = coop(model.step({"images": images, "labels": labels}))

    with torch.no_grad():  # reference: splice row by row, pool [CLS], project, normalise
        text = model.encoders.text
        ids, slots = coop.prompt.text_ids, coop.prompt.slot_mask
        embeds = text.model.get_input_embeddings()(ids).clone()
        for row in range(len(ids)):
            embeds[row, slots[row]] = coop.prompt.context
        hidden = text.model(inputs_embeds=embeds, attention_mask=coop.prompt.text_mask)
        classes = F.normalize(contrastive.text_proj(hidden.last_hidden_state[:, 0]), dim=-1)
        image = F.normalize(contrastive.image_proj(model.encoders.vision(images).pooled), dim=-1)
    expected = []
    for i in range(3):
        logits = [(image[i] @ classes[c]).item() / 0.2 for c in range(len(CLASS_NAMES))]
        log_norm = torch.tensor(logits).logsumexp(0)
        expected.append(float(log_norm) - logits[int(labels[i])])
    assert terms["coop_loss"].item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    predicted = (image[:3] @ classes.T).argmax(-1)
    assert terms["acc"].item() == pytest.approx((predicted == labels[:3]).float().mean().item())


def test_a_batch_without_labels_is_refused() -> None:
    model = coop_model(num_context=2)
    step = model.step({"images": torch.randn(2, 3, 32, 32), "labels": torch.tensor([-1, -1])})
    with pytest.raises(ValueError, match="labelled images"):
        model.objectives[1](step)


def test_only_the_context_learns_and_everything_else_stays_bit_identical() -> None:
    model = coop_model(init_text="a photo of a")
    assert model.objectives[1].prompt.context.shape == (4, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [CONTEXT]

    class FrozenInEvalMode(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            assert not module.encoders.training and not module.objectives[0].training
            assert module.objectives[1].training

    data = tiny_data(SyntheticScenes("train", 12, image_size=32), model.tokenize)
    trainer = quiet_trainer(max_steps=3, callbacks=[FrozenInEvalMode()])
    trainer.fit(model, data)

    after = model.state_dict()
    assert not torch.equal(after[CONTEXT], before[CONTEXT])
    for key, value in before.items():
        if key != CONTEXT:
            assert torch.equal(after[key], value), key
    assert trainer.callback_metrics["train/trainable_params"].item() == 4 * 32
    assert torch.isfinite(trainer.callback_metrics["train/coop/coop_loss"])
