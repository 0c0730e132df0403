"""Deep prompts (P-tuning v2) of a P-tuned Flamingo: set to the keys and values the LM
computes for a text, they must act exactly as that text written before the template, in
the loss and in generation (greedy and beam search through ``generate``)."""

from __future__ import annotations

import pytest
import torch

from tests.objectives.flamingo_tiny import open_gates, tiny_model
from tests.objectives.test_flamingo_ptuning import ptuned, scenes_batch
from vlp.flamingo.generation import Decoding, generate_from_ids
from vlp.flamingo.loss import IGNORE
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.flamingo_ptuning import FlamingoPromptTuning

TEXT = "a photo of"  # no <image>: no visual attention, as before a template's image


def with_text_as_prefix() -> tuple[FlamingoPromptTuning, torch.Tensor, torch.Tensor]:
    """A P-tuned Flamingo whose caption deep prompts hold ``TEXT``'s keys and values;
    the text's ids and the images' visual tokens."""
    objective = ptuned(tasks=("caption",), deep_prompt_length=3)
    model = tiny_model([objective]).eval()
    open_gates(objective)
    text_ids = torch.tensor([objective.lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    assert text_ids.shape[1] == 3
    visual = torch.randn(2, 1, 4, model.encoders.vision.width)
    with torch.no_grad():
        cache = objective.lm(text_ids.expand(2, -1), visual, use_cache=True).cache
        prefix = objective.deep_prompts["caption"].prefix
        for layer, cached in enumerate(cache.layers):
            prefix[layer, 0], prefix[layer, 1] = cached.keys[0], cached.values[0]
    return objective, text_ids, visual


def after_text(
    text_ids: torch.Tensor, tensor: torch.Tensor, fill: int | bool | None
) -> torch.Tensor:
    """``tensor`` [B, L] with the text's columns in front (its ids, or ``fill``)."""
    front = text_ids.expand(len(tensor), -1) if fill is None else text_ids.new_full(
        (len(tensor), text_ids.shape[1]), fill, dtype=tensor.dtype
    )  # fmt: skip
    return torch.cat([front, tensor], dim=1)


def test_the_loss_with_a_texts_prefix_is_the_loss_with_that_text_in_front() -> None:
    objective, text_ids, visual = with_text_as_prefix()
    targets = ["a red circle", "two squares"]
    with torch.no_grad():
        loss = objective._loss("caption", visual, [0, 1], [{}, {}], targets)
        batch = objective.prompted_batch("caption", [{}, {}], targets)
        with objective._spliced("caption", after_text(text_ids, batch.slot_mask, False)):
            expected = objective.lm_nll(
                after_text(text_ids, batch.input_ids, None),
                visual,
                after_text(text_ids, batch.attention_mask, 1),
                after_text(text_ids, batch.labels, IGNORE),
            )
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    assert objective.lm.conditioning.prefix_length == 0  # reset after the call


@pytest.mark.parametrize("beams", [1, 2])
def test_generation_with_a_texts_prefix_is_generation_with_that_text_in_front(beams: int) -> None:
    objective, text_ids, visual = with_text_as_prefix()
    decoding = Decoding(max_new_tokens=4, num_beams=beams)
    generated = objective.generate_prompted("caption", visual, [{}, {}], decoding)
    batch = objective.templates["caption"].batch(
        objective.lm.tokenizer, [{}, {}], open_end=True, padding_side="left"
    )
    slots = after_text(text_ids, batch.slot_mask, False).repeat_interleave(beams, dim=0)
    with objective._spliced("caption", slots):
        expected = generate_from_ids(
            objective.lm,
            visual,
            after_text(text_ids, batch.input_ids, None),
            after_text(text_ids, batch.attention_mask, 1),
            decoding,
        )
    assert generated == expected


def test_deep_prompts_learn_beside_the_prompt_encoders_and_are_exported() -> None:
    objective = ptuned(deep_prompt_length=2, deep_prompt_projection=True)
    model = tiny_model([Contrastive(weight=0.0, embed_dim=8), objective])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".deep_prompts." in n for n in trainable)
    assert all(".prompts." in n or ".deep_prompts." in n for n in trainable)
    model.train()
    terms = objective(model.step(scenes_batch(model)))
    (terms["caption_loss"] + terms["vqa_loss"]).backward()
    for name, parameter in model.named_parameters():
        if ".deep_prompts." in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    vectors = objective.prompt_vectors()
    layers = objective.lm.lm.config.n_layer
    assert vectors["vqa_deep"].shape == (layers, 2, 2, 2, 16)  # [layers, k/v, heads, m, width]
    assert objective.prompt_spec("p")["vqa"]["deep_prefix"] == "p.prompt_vectors.vqa_deep"


def test_uncached_decoding_is_refused_with_deep_prompts() -> None:
    objective, _, visual = with_text_as_prefix()
    with pytest.raises(ValueError, match="use_cache"):
        objective.generate_prompted("caption", visual, [{}, {}], Decoding(2, 1, use_cache=False))


def test_a_task_without_rows_still_gives_its_deep_prompts_a_zero_gradient() -> None:
    """Under DDP every rank must reduce the same parameters' gradients, also a rank whose
    batch asked no question."""
    objective = ptuned(deep_prompt_length=2)
    model = tiny_model([objective])
    visual = torch.randn(2, 1, 4, model.encoders.vision.width)
    loss = objective._loss("vqa", visual, [], [], [])
    loss.backward()
    assert loss.item() == 0.0
    learned = [*objective.prompts["vqa"].parameters(), *objective.deep_prompts["vqa"].parameters()]
    assert learned and all(p.grad is not None and not p.grad.any() for p in learned)
