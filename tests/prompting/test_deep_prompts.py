import pytest
import torch

from tests.flamingo.tiny_lm import tiny_lm
from vlp.prompting.deep_prompts import DeepPrompts


def text_batch(vocab: int, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(1000, vocab, (2, length))
    return ids, torch.ones_like(ids)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_zero_length_prefix_leaves_the_lm_unchanged(family):
    lm, _ = tiny_lm(family)
    lm.eval()
    ids, mask = text_batch(lm.config.vocab_size)
    deep = DeepPrompts.for_model(lm, num_virtual_tokens=0)
    logits = lm(input_ids=ids, **deep(mask)).logits
    assert torch.allclose(logits, lm(input_ids=ids, attention_mask=mask).logits, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_prefix_of_real_keys_and_values_continues_that_text(family):
    """Set to the keys/values the LM computes for a real text, the prefix must make the LM
    read the continuation exactly as it reads the concatenated text."""
    lm, _ = tiny_lm(family)
    lm.eval()
    ids, mask = text_batch(lm.config.vocab_size)
    prefix_ids = torch.tensor([[1037, 6302, 1997]])  # "a photo of"
    cache = lm(input_ids=prefix_ids, use_cache=True).cache
    deep = DeepPrompts.for_model(lm, num_virtual_tokens=3)
    kv_heads = {"gpt2": 2, "llama": 1}[family]  # Llama's tiny config uses GQA
    assert deep.prefix.shape == (2, 2, kv_heads, 3, 16)
    with torch.no_grad():
        for layer, cached in enumerate(cache.layers):
            deep.prefix[layer, 0] = cached.keys[0]
            deep.prefix[layer, 1] = cached.values[0]
    logits = lm(input_ids=ids, **deep(mask)).logits
    full = torch.cat([prefix_ids.expand(2, -1), ids], dim=1)
    expected = lm(input_ids=full).logits[:, 3:]
    assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(lm(input_ids=ids).logits, expected, atol=1e-3)


def test_the_mask_is_extended_by_the_prefix_and_padding_stays_masked():
    lm, _ = tiny_lm("gpt2")
    deep = DeepPrompts.for_model(lm, num_virtual_tokens=4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    inputs = deep(mask)
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0], [1] * 7]
    assert inputs["cache"].get_seq_length() == 4
    assert inputs["cache"].layers[0].keys.shape == (2, 2, 4, 16)


@pytest.mark.parametrize("prefix_projection", [False, True])
def test_only_the_prefix_learns_from_the_lm_loss(prefix_projection):
    lm, _ = tiny_lm("llama")
    lm.requires_grad_(False)
    ids, mask = text_batch(lm.config.vocab_size)
    deep = DeepPrompts.for_model(
        lm, num_virtual_tokens=2, prefix_projection=prefix_projection, prefix_hidden_size=8
    )
    assert deep.key_values().shape == (2, 2, 1, 2, 16)
    lm(input_ids=ids, labels=ids, **deep(mask)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep.parameters())
    # P-tuning v2's MLP: Embedding(m, H) → Linear(H, 8) → Tanh → Linear(8, layers·2·kv·head_dim)
    if prefix_projection:
        assert deep.projection[-1].out_features == 2 * 2 * 1 * 16
    # Two calls give independent caches: the LM appends to the one it is given.
    assert deep(mask)["cache"].get_seq_length() == 2


def test_prefix_projection_needs_the_input_width():
    with pytest.raises(ValueError, match="token_dim"):
        DeepPrompts(2, num_layers=1, num_kv_heads=1, head_dim=4, prefix_projection=True)
