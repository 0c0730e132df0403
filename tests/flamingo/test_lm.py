import copy
import inspect

import pytest
import torch
from torch import nn

from tests.flamingo.tiny_lm import MEDIA_DIM, tiny_lm
from vlp.flamingo.added_tokens import AddedTokenEmbedding, AddedTokenHead
from vlp.flamingo.lm import FlamingoLayer, FlamingoLM, MediaConditioning, decoder_layers
from vlp.flamingo.loss import flamingo_labels, lm_loss
from vlp.flamingo.resampler import PerceiverResampler

FAMILIES = ["gpt2", "opt", "llama", "gpt_neox"]
TEXT = ["a <image> red circle <|endofchunk|> <image> blue", "<image> two squares <|endofchunk|>"]


def flamingo(family: str, **kwargs) -> tuple[FlamingoLM, nn.Module]:
    """The wrapped LM and an untouched copy of the LM it was built from."""
    lm, tokenizer = tiny_lm(family)
    original = copy.deepcopy(lm)
    return FlamingoLM(lm, tokenizer, MEDIA_DIM, heads=2, dim_head=8, **kwargs), original


def batch(model: FlamingoLM) -> dict[str, torch.Tensor]:
    return dict(model.tokenizer(TEXT, padding=True, return_tensors="pt"))


def open_gates(model: FlamingoLM) -> None:
    with torch.no_grad():
        for block in model.cross_attn_blocks():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_the_frozen_lm_at_init(family):
    model, original = flamingo(family)
    inputs = batch(model)
    media = torch.randn(2, 2, 4, MEDIA_DIM)
    logits = model(inputs["input_ids"], media, inputs["attention_mask"]).logits
    # The original LM cannot read the added ids: give it the same input embeddings.
    embeds = model.lm.get_input_embeddings()(inputs["input_ids"])
    expected = original(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    vocab = original.config.vocab_size
    assert logits.shape[-1] == vocab + 2
    assert torch.equal(logits[..., :vocab], expected)
    open_gates(model)
    opened = model(inputs["input_ids"], media, inputs["attention_mask"]).logits
    assert not torch.allclose(opened[..., :vocab], expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_at_gives_the_full_logits_at_those_positions_only(family):
    model, _ = flamingo(family)
    open_gates(model)
    inputs = batch(model)
    media = torch.randn(2, 2, 4, MEDIA_DIM)
    full = model(inputs["input_ids"], media, inputs["attention_mask"]).logits
    at = inputs["attention_mask"].bool() & (torch.rand(full.shape[:2]) < 0.5)
    kept = model(inputs["input_ids"], media, inputs["attention_mask"], predict_at=at).logits
    assert kept.shape == (int(at.sum()), full.shape[-1])
    assert torch.allclose(kept, full[at], atol=1e-6)
    again = model(inputs["input_ids"], media, inputs["attention_mask"]).logits
    assert again.shape == full.shape  # the positions apply inside the call only


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_each_token_is_conditioned_on_its_last_image_only(family):
    model, _ = flamingo(family)
    open_gates(model)
    ids = model.tokenizer(TEXT[:1], return_tensors="pt")["input_ids"]
    media = torch.randn(1, 2, 4, MEDIA_DIM)
    changed = media.clone()
    changed[:, 1] += 1.0  # the second image
    moved = (model(ids, changed).logits - model(ids, media).logits).abs().amax(-1)[0]
    second_tag = (ids[0] == model.tokens.image).nonzero()[1].item()
    assert torch.equal(moved > 0, torch.arange(len(ids[0])) >= second_tag)


def test_a_block_sits_before_every_nth_layer():
    lm, tokenizer = tiny_lm("llama", num_hidden_layers=4)
    model = FlamingoLM(lm, tokenizer, MEDIA_DIM, cross_attn_every=2, heads=2, dim_head=8)
    layers = decoder_layers(model.lm)
    assert [layer.xattn is not None for layer in layers] == [False, True, False, True]
    assert len(list(model.cross_attn_blocks())) == 2


def test_decoder_layers_by_explicit_path():
    lm, _ = tiny_lm("gpt2")
    assert decoder_layers(lm, "transformer.h") is lm.transformer.h
    with pytest.raises(ValueError, match="layers_path"):
        decoder_layers(lm, "transformer.blocks")
    with pytest.raises(ValueError, match="layers_path"):
        decoder_layers(nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("family", "tied", "spare_rows"), [("gpt2", True, 0), ("llama", False, 0), ("opt", True, 8)]
)
def test_added_tokens_have_their_own_rows(family, tied, spare_rows):
    # spare_rows: the LM's vocabulary is padded past the tokenizer (as OPT's is), so the
    # added ids fall on existing, frozen rows that must be bypassed.
    lm, tokenizer = tiny_lm(family, vocab_size=30522 + spare_rows)
    original = copy.deepcopy(lm)
    model = FlamingoLM(lm, tokenizer, MEDIA_DIM, heads=2, dim_head=8)
    embedding, head = model.lm.get_input_embeddings(), model.lm.get_output_embeddings()
    assert isinstance(embedding, AddedTokenEmbedding) and isinstance(head, AddedTokenHead)
    assert (head.rows is embedding.rows) == tied
    ids = torch.tensor([[model.tokens.image, 5, model.tokens.end_of_chunk]])
    embedded = embedding(ids)[0]
    slot = (embedding.added_ids == model.tokens.end_of_chunk).nonzero().item()
    assert torch.equal(embedded[1], original.get_input_embeddings().weight[5])
    assert torch.equal(embedded[2], embedding.rows[slot])
    hidden = torch.randn(3, 32)
    logits, expected = head(hidden), original.get_output_embeddings()(hidden)
    assert logits.shape[-1] == max(expected.shape[-1], 30524)
    torch.testing.assert_close(logits[:, model.tokens.end_of_chunk], hidden @ head.rows[slot])
    kept = [i for i in range(expected.shape[-1]) if i not in embedding.added_ids]
    torch.testing.assert_close(logits[:, kept], expected[:, kept])


def train_steps(model: FlamingoLM, resampler: PerceiverResampler, steps: int = 3) -> None:
    """A few AdamW steps with weight decay on every trainable parameter."""
    inputs = batch(model)
    labels = flamingo_labels(
        inputs["input_ids"], inputs["attention_mask"], *model.tokens.__dict__.values(), True
    )
    params = [p for m in (model, resampler) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    patches = torch.randn(2, 2, 1, 6, MEDIA_DIM)
    for _ in range(steps):
        media = resampler(patches)
        logits = model(inputs["input_ids"], media, inputs["attention_mask"]).logits
        lm_loss(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before: list[torch.Tensor], params) -> list[bool]:
    return [not torch.equal(b, p) for b, p in zip(before, params, strict=True)]


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama"])
def test_training_leaves_the_frozen_lm_bit_identical(family):
    lm, tokenizer = tiny_lm(family)
    lm_params = list(lm.parameters())
    model = FlamingoLM(lm, tokenizer, MEDIA_DIM, heads=2, dim_head=8)
    resampler = PerceiverResampler(MEDIA_DIM, depth=1, heads=2, dim_head=8, num_latents=4)
    embedding = model.lm.get_input_embeddings()
    gates = [p for b in model.cross_attn_blocks() for p in (b.attn_gate, b.ff_gate)]
    trained = [embedding.rows, *gates, *resampler.parameters()]
    lm_before, trained_before = snapshot(lm_params), snapshot(trained)
    train_steps(model, resampler)
    assert not any(changed(lm_before, lm_params))
    assert all(changed(trained_before, trained))


def test_what_is_trained_is_configurable():
    lm, tokenizer = tiny_lm("gpt2")
    lm_params = list(lm.parameters())
    model = FlamingoLM(
        lm, tokenizer, MEDIA_DIM, heads=2, dim_head=8, freeze_lm=False, train_added_tokens=False
    )
    rows = model.lm.get_input_embeddings().rows
    resampler = PerceiverResampler(MEDIA_DIM, depth=1, heads=2, dim_head=8, num_latents=4)
    lm_before, rows_before = snapshot(lm_params), rows.detach().clone()
    train_steps(model, resampler, steps=1)
    assert all(changed(lm_before, lm_params))
    assert torch.equal(rows, rows_before)


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama"])
def test_cached_decoding_matches_the_full_forward(family):
    model, _ = flamingo(family)
    open_gates(model)
    ids = model.tokenizer(TEXT[:1], return_tensors="pt")["input_ids"]
    media = torch.randn(1, 2, 4, MEDIA_DIM)
    full = model(ids, media).logits
    second_tag = (ids[0] == model.tokens.image).nonzero()[1].item()
    chunks = [ids[:, :2], ids[:, 2:second_tag], ids[:, second_tag : second_tag + 2]]
    chunks += list(ids[:, second_tag + 2 :].split(1, dim=1))  # one token at a time
    # transformers 5 renamed past_key_values to cache
    name = (
        "cache" if "cache" in inspect.signature(model.lm.forward).parameters else "past_key_values"
    )
    with model.conditioned_on(media):
        past, pieces = None, []
        for chunk in chunks:
            out = model.lm(input_ids=chunk, **{name: past}, use_cache=True)
            past = out[name]
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_generate_decodes_greedily_with_the_images():
    model, _ = flamingo("llama")
    open_gates(model)
    ids = model.tokenizer(TEXT[:1], return_tensors="pt")["input_ids"]
    media = torch.randn(1, 2, 4, MEDIA_DIM)
    with model.conditioned_on(media):
        generated = model.lm.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    expected = ids
    for _ in range(3):  # no cache: the whole sequence each step
        next_id = model(expected, media).logits[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, next_id], dim=1)
    assert torch.equal(generated, expected)


def test_wrapped_layers_expose_the_attributes_of_the_layer_inside():
    lm, _ = tiny_lm("llama")
    layer = decoder_layers(lm)[0]
    wrapped = FlamingoLayer(layer, None, MediaConditioning(image_token_id=0))
    assert wrapped.self_attn is layer.self_attn and wrapped.decoder_layer is layer


def test_a_deep_copy_is_conditioned_on_its_own():
    model, _ = flamingo("gpt2")
    open_gates(model)
    twin = copy.deepcopy(model)  # as an EMA teacher is made
    ids = model.tokenizer(TEXT[:1], return_tensors="pt")["input_ids"]
    media = torch.randn(1, 2, 4, MEDIA_DIM)
    with_media, text_only = twin(ids, media).logits, twin(ids).logits
    torch.testing.assert_close(with_media, model(ids, media).logits)
    assert not torch.allclose(with_media, text_only)
    with model.conditioned_on(media):  # conditioning the original leaves the copy text-only
        torch.testing.assert_close(twin.lm(ids).logits, text_only)


def test_a_tokenizer_larger_than_the_lm_is_refused():
    lm, tokenizer = tiny_lm("gpt2", vocab_size=100)
    with pytest.raises(ValueError, match="tokenizer"):
        FlamingoLM(lm, tokenizer, MEDIA_DIM)
