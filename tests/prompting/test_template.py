import copy

import pytest
import torch
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

from tests.flamingo.tiny_lm import MEDIA_DIM, tiny_lm
from vlp.flamingo.lm import FlamingoLM
from vlp.flamingo.tokens import add_flamingo_tokens
from vlp.prompting.prompt_encoder import PromptEncoder
from vlp.prompting.splice import prompts_spliced, splice
from vlp.prompting.template import IGNORE_INDEX, PromptTemplate

CAPTION = PromptTemplate("[P][P] <image> [P] caption:")
VQA = PromptTemplate("[P][P] <image> Question: {q} [P] Answer:")
HAND_PROMPT = "the image of"  # three tokens for the three slots


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def hand_prompt(batch, tokenizer, embedding):
    """The hand prompt's token ids written into the slots, and a prompt encoder whose
    outputs are those tokens' embeddings."""
    hand = torch.tensor(ids(tokenizer, HAND_PROMPT))
    reference = batch.input_ids.clone()
    reference[batch.slot_mask] = hand.repeat(len(reference))
    vectors = embedding(hand)
    encoder = PromptEncoder(*vectors.shape, encoder_reparameterization_type="NONE")
    encoder.init_from(vectors)
    return reference, encoder


def test_slots_sit_between_the_anchor_tokens():
    _, tokenizer = tiny_lm("gpt2")
    image = add_flamingo_tokens(tokenizer).image
    batch = VQA.batch(tokenizer, [{"q": "what colour?"}], targets=["red"])
    slot = tokenizer.unk_token_id
    question, answer = ids(tokenizer, "Question: what colour?"), ids(tokenizer, "Answer:")
    target = ids(tokenizer, "red")
    expected = [slot, slot, image, *question, slot, *answer, *target]
    assert batch.input_ids[0].tolist() == expected
    slots = [i for i, is_slot in enumerate(batch.slot_mask[0].tolist()) if is_slot]
    assert slots == [0, 1, 3 + len(question)]
    assert batch.labels[0].tolist() == [IGNORE_INDEX] * (len(expected) - 1) + target
    assert VQA.num_slots == CAPTION.num_slots == 3


def test_rows_are_padded_with_masks_and_labels_aligned():
    _, tokenizer = tiny_lm("gpt2")
    add_flamingo_tokens(tokenizer)
    batch = CAPTION.batch(tokenizer, [{}, {}], targets=["a red circle", "two"])
    lengths = batch.attention_mask.sum(1).tolist()
    assert lengths[0] == lengths[1] + 2 == batch.input_ids.shape[1]
    assert batch.slot_mask.sum(1).tolist() == [3, 3]
    assert batch.labels[1, lengths[1] :].eq(IGNORE_INDEX).all()
    assert batch.labels[1, lengths[1] - 1].item() == ids(tokenizer, "two")[0]
    tokenizer.padding_side = "left"
    left = CAPTION.batch(tokenizer, [{}, {}], targets=["a red circle", "two"])
    assert torch.equal(left.input_ids[1, 2:], batch.input_ids[1, :-2])
    assert torch.equal(left.slot_mask[1, 2:], batch.slot_mask[1, :-2])


def test_special_tokens_wrap_the_filled_template():
    _, tokenizer = tiny_lm("gpt2")
    batch = PromptTemplate("[P] {x}.", add_special_tokens=True).batch(tokenizer, [{"x": "dog"}])
    expected = tokenizer("a dog.")["input_ids"]  # [CLS] a dog . [SEP]
    expected[1] = tokenizer.unk_token_id
    assert batch.input_ids[0].tolist() == expected
    assert batch.slot_mask[0].tolist() == [False, True, False, False, False]


def test_slots_are_not_padding_so_roberta_positions_run_on_through_them():
    # RoBERTa numbers positions by input_ids != pad: a pad id in a slot would give the
    # slot the padding position and shift every later token's.
    _, tokenizer = tiny_lm("gpt2")
    template = PromptTemplate("[P][P] a {x} [P].", add_special_tokens=True)
    batch = template.batch(tokenizer, [{"x": "dog"}, {"x": "big red dog"}])
    pad = tokenizer.pad_token_id
    assert batch.slot_mask.sum() == 6 and (batch.input_ids[batch.slot_mask] != pad).all()
    positions = RobertaEmbeddings.create_position_ids_from_input_ids(batch.input_ids, pad)
    for row, length in enumerate(batch.attention_mask.sum(1).tolist()):
        assert positions[row, :length].tolist() == list(range(pad + 1, pad + 1 + length))
        assert (positions[row, length:] == pad).all()


def test_splice_puts_prompt_i_at_slot_i_of_every_row():
    embeds = torch.zeros(2, 4, 3)
    slot_mask = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    prompts = torch.tensor([[1.0, 1, 1], [2, 2, 2]])
    out = splice(embeds, slot_mask, prompts)
    assert out[:, :, 0].tolist() == [[1, 0, 2, 0], [0, 1, 0, 2]]
    per_row = torch.arange(12.0).view(2, 2, 3)
    assert torch.equal(splice(embeds, slot_mask, per_row)[1, 3], per_row[1, 1])
    with pytest.raises(ValueError, match="exactly 3"):
        splice(embeds, slot_mask, torch.ones(3, 3))


def test_gradients_reach_the_prompt_encoder_through_the_slots_only():
    encoder = PromptEncoder(2, 3, encoder_reparameterization_type="LSTM")
    embeds = torch.randn(1, 4, 3, requires_grad=True)
    slot_mask = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    splice(embeds, slot_mask, encoder()).sum().backward()
    assert embeds.grad[0, :, 0].tolist() == [1, 0, 0, 1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_gpt2_with_hand_prompt_vectors_reproduces_the_hand_prompt_exactly():
    lm, tokenizer = tiny_lm("gpt2")
    lm.eval()
    template = PromptTemplate("[P][P] a picture [P] caption:")
    batch = template.batch(tokenizer, [{}, {}], targets=["a red circle", "two"])
    embedding = lm.get_input_embeddings()
    reference, encoder = hand_prompt(batch, tokenizer, embedding)
    out = lm(
        inputs_embeds=batch.inputs_embeds(embedding, encoder()),
        attention_mask=batch.attention_mask,
        labels=batch.labels,
    )
    expected = lm(input_ids=reference, attention_mask=batch.attention_mask, labels=batch.labels)
    assert torch.equal(out.logits, expected.logits)
    assert torch.equal(out.loss, expected.loss)
    hand_text = tokenizer.decode(reference[0, batch.attention_mask[0].bool()])
    assert hand_text == "the image a picture of caption : a red circle"


def test_flamingo_with_hand_prompt_vectors_reproduces_the_hand_prompt_exactly():
    lm, tokenizer = tiny_lm("gpt2")
    model = FlamingoLM(lm, tokenizer, MEDIA_DIM, heads=2, dim_head=8).eval()
    with torch.no_grad():
        for block in model.cross_attn_blocks():  # open the gates: the image matters
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)
    batch = CAPTION.batch(model.tokenizer, [{}, {}], targets=["a red circle", "two"])
    embedding = model.lm.get_input_embeddings()
    reference, encoder = hand_prompt(batch, model.tokenizer, embedding)
    media = torch.randn(2, 1, 4, MEDIA_DIM)
    with prompts_spliced(embedding, batch.slot_mask, encoder()):
        logits = model(batch.input_ids, media, batch.attention_mask).logits
    expected = model(reference, media, batch.attention_mask).logits
    assert torch.equal(logits, expected)
    other_image = model(reference, media + 1.0, batch.attention_mask).logits
    assert not torch.allclose(other_image, expected)


def test_spliced_prompts_go_into_the_prefill_of_generate_only():
    lm, tokenizer = tiny_lm("gpt2")
    lm.eval()
    batch = PromptTemplate("[P][P] a picture [P] caption:").batch(tokenizer, [{}])
    embedding = lm.get_input_embeddings()
    reference, encoder = hand_prompt(batch, tokenizer, embedding)
    settings = {"attention_mask": batch.attention_mask, "max_new_tokens": 4, "do_sample": False}
    with prompts_spliced(embedding, batch.slot_mask, encoder()):
        generated = lm.generate(input_ids=batch.input_ids, **settings)
    expected = lm.generate(input_ids=reference, **settings)
    assert torch.equal(generated[:, batch.input_ids.shape[1] :], expected[:, reference.shape[1] :])
    assert not embedding._forward_hooks  # the hook is gone after the block


def test_missing_template_field_is_an_error():
    _, tokenizer = tiny_lm("gpt2")
    with pytest.raises(KeyError, match="q"):
        VQA.batch(copy.deepcopy(tokenizer), [{}])
