"""The Flamingo objective: its loss by hand, media through the shared tower, what trains."""

from __future__ import annotations

import math

import torch

from tests.objectives.flamingo_tiny import open_gates, tiny_data, tiny_flamingo, tiny_model
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.datamodules.synthetic.media_text import SyntheticClips
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.flamingo import CrossAttentionConfig, Flamingo


def pairs_batch(model, size: int = 4) -> dict:
    data = tiny_data(model, train=SyntheticScenes("train", size, image_size=32), shuffle=False)
    return next(iter(data.train_dataloader()))


def hand_nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over every labelled token t ≥ 1 of −log softmax(logits[t − 1])[label_t]."""
    total, count = 0.0, 0
    for row in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            target = int(labels[row, t])
            if target == -100:
                continue
            scores = logits[row, t - 1].detach().double()
            total += float(scores.logsumexp(0) - scores[target])
            count += 1
    return total / count


def test_loss_is_the_lm_nll_of_the_captions_given_their_images():
    flamingo = tiny_flamingo()
    model = tiny_model([flamingo])
    open_gates(flamingo)
    batch = pairs_batch(model)
    step = model.step(batch)
    loss = flamingo(step)["lm_loss"]
    patches = model.encoders.vision(batch["images"]).tokens[:, None, None]  # one 1-frame medium
    logits = flamingo.lm(batch["lm_ids"], flamingo.resampler(patches), batch["lm_mask"]).logits
    assert math.isclose(loss.item(), hand_nll(logits, batch["lm_labels"]), rel_tol=1e-5)
    # every caption token, <|endofchunk|> and the final [SEP] are targets; <image> and pads not
    image_id = flamingo.lm.tokens.image
    labelled = batch["lm_labels"] != -100
    assert not labelled[batch["lm_ids"] == image_id].any()
    assert torch.equal(labelled[:, 2:], batch["lm_mask"][:, 2:].bool())
    # the images matter: other images, another loss
    other = model.step({**batch, "images": batch["images"].flip(0)})
    assert abs(flamingo(other)["lm_loss"].item() - loss.item()) > 1e-5


def test_clip_frames_reach_the_resampler_as_the_frames_of_one_medium():
    flamingo = tiny_flamingo()
    model = tiny_model([flamingo])
    data = tiny_data(model, train=SyntheticClips("train", 2, num_frames=3, image_size=32))
    data.batch_size = 2
    batch = next(iter(data.train_dataloader()))
    assert batch["media"].shape == (2, 1, 3, 3, 32, 32)  # [B, T, F, C, H, W]
    seen = []
    flamingo.resampler.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    flamingo(model.step(batch))
    (media,) = seen
    assert media.shape[:3] == (2, 1, 3)
    for frame in range(3):
        expected = model.encoders.vision(batch["media"][:, 0, frame]).tokens
        torch.testing.assert_close(media[:, 0, frame], expected)


def test_joint_step_with_itc_encodes_images_once_and_both_losses_reach_the_tower():
    flamingo = tiny_flamingo()
    itc = Contrastive(embed_dim=8)
    model = tiny_model([itc, flamingo])
    open_gates(flamingo)  # at tanh(0) = 0 only the gates get a gradient, as in the paper
    batch = pairs_batch(model)
    calls = []
    model.encoders.vision.register_forward_hook(lambda *_: calls.append(1))
    step = model.step(batch)
    losses = {"itc": itc(step)["contrastive_loss"], "flamingo": flamingo(step)["lm_loss"]}
    assert len(calls) == 1
    tower = list(model.encoders.vision.parameters())
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, tower, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_only_the_new_modules_and_added_rows_train_and_the_frozen_lm_has_no_dropout():
    flamingo = tiny_flamingo()
    model = tiny_model([flamingo]).train()
    trainable = {n for n, p in flamingo.named_parameters() if p.requires_grad}
    assert trainable
    assert all(
        n.startswith("resampler.") or ".xattn." in n or n.endswith(".rows") for n in trainable
    )
    assert any(n.endswith(".rows") for n in trainable)
    assert not any(p.requires_grad for n, p in flamingo.lm.lm.named_parameters()
                   if ".xattn." not in n and not n.endswith(".rows"))  # fmt: skip
    assert not flamingo.lm.lm.training
    assert all(block.training for block in flamingo.lm.cross_attn_blocks())
    batch = pairs_batch(model)
    first, second = (flamingo(model.step(batch))["lm_loss"] for _ in range(2))
    assert torch.equal(first, second)  # the LM's dropout (p = 0.1) is off

    tuned = tiny_flamingo(freeze_lm=False, train_added_tokens=False)
    tiny_model([tuned]).train()
    assert tuned.lm.lm.training
    assert all(p.requires_grad for n, p in tuned.lm.lm.named_parameters() if "rows" not in n)
    assert not any(p.requires_grad for n, p in tuned.lm.lm.named_parameters() if "rows" in n)


def test_text_attends_every_image_before_it_without_only_attend_immediate_media():
    every_image = CrossAttentionConfig(heads=2, dim_head=8, only_attend_immediate_media=False)
    flamingo = tiny_flamingo(cross_attention=every_image)
    model = tiny_model([flamingo])
    ids = flamingo.lm.tokenizer(["<image>a<|endofchunk|><image>b"], return_tensors="pt")
    masks = []
    block = next(flamingo.lm.cross_attn_blocks())
    block.register_forward_pre_hook(lambda _, args: masks.append(args[2]))
    flamingo.lm(ids["input_ids"], torch.zeros(1, 2, 4, model.encoders.vision.width))
    images_seen = masks[0][0].unflatten(-1, (2, 4)).all(-1)  # [L, image]
    # [CLS] <image> a <|endofchunk|> <image> b [SEP]
    expected = [[False, False]] + [[True, False]] * 3 + [[True, True]] * 3
    assert images_seen.tolist() == expected


def test_an_lm_built_from_a_config_trains_unless_frozen_and_a_pretrained_one_is_frozen():
    assert not tiny_flamingo(freeze_lm=None).freeze_lm  # random weights: frozen, they'd be noise
    assert Flamingo(lm="facebook/opt-125m").freeze_lm  # resolved before anything loads
    assert not Flamingo(lm="facebook/opt-125m", freeze_lm=False).freeze_lm
