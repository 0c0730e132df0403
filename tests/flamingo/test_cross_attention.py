import math

import pytest
import torch
import torch.nn.functional as F

from vlp.flamingo.cross_attention import GatedCrossAttentionBlock
from vlp.flamingo.media_mask import media_attention_mask, media_index

IMG = 9


@pytest.fixture
def inputs():
    torch.manual_seed(0)
    ids = torch.tensor([[1, IMG, 2, IMG, 3], [IMG, 2, 3, 4, 5]])
    text = torch.randn(2, 5, 6)
    media = torch.randn(2, 2, 3, 4)  # [B, T, n, media_dim]
    mask = media_attention_mask(media_index(ids, IMG), num_media=2, num_latents=3)
    return text, media, mask


def open_gates(block: GatedCrossAttentionBlock) -> None:
    with torch.no_grad():
        block.attn_gate.fill_(math.atanh(0.5))
        block.ff_gate.fill_(math.atanh(-0.25))


def test_block_is_exactly_the_identity_at_init(inputs):
    text, media, mask = inputs
    block = GatedCrossAttentionBlock(6, 4, heads=2, dim_head=3)
    assert torch.equal(block(text, media, mask), text)


def reference(block, text, media, mask):
    """The block written out per head with an explicit masked softmax."""
    attn, heads = block.attn, block.attn.heads
    q = block.norm(text) @ attn.to_q.weight.T  # [B, L, H·d]
    k, v = (media.flatten(1, 2) @ attn.to_kv.weight.T).chunk(2, dim=-1)
    outputs = []
    for h in range(heads):
        d = q.shape[-1] // heads
        part = slice(h * d, (h + 1) * d)
        logits = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(d)
        weights = logits.masked_fill(~mask, -math.inf).softmax(dim=-1).nan_to_num(0.0)
        outputs.append(weights @ v[..., part])
    attended = torch.cat(outputs, dim=-1) @ attn.to_out.weight.T
    y = text + 0.5 * attended
    return y - 0.25 * block.ff(y)


def test_block_matches_a_hand_written_masked_attention(inputs):
    text, media, mask = inputs
    block = GatedCrossAttentionBlock(6, 4, heads=2, dim_head=3)
    open_gates(block)
    torch.testing.assert_close(block(text, media, mask), reference(block, text, media, mask))


def test_text_before_any_image_gets_only_the_feed_forward(inputs):
    text, media, mask = inputs
    block = GatedCrossAttentionBlock(6, 4, heads=2, dim_head=3)
    open_gates(block)
    text.requires_grad_(True)
    out = block(text, media, mask)
    first = text[0, :1]  # row 0's first token precedes its first <image>
    torch.testing.assert_close(out[0, :1], first - 0.25 * block.ff(first))
    out.sum().backward()
    grads = [text.grad, *(p.grad for p in block.parameters())]
    assert all(torch.isfinite(g).all() for g in grads)


def test_without_media_only_the_feed_forward_acts(inputs):
    text, _, _ = inputs
    block = GatedCrossAttentionBlock(6, 4, heads=2, dim_head=3)
    open_gates(block)
    torch.testing.assert_close(block(text, None, None), text - 0.25 * block.ff(text))
    assert not torch.allclose(block(text, None, None), text)  # the check above can fail


def test_attention_follows_the_mask_not_all_media(inputs):
    text, media, mask = inputs
    block = GatedCrossAttentionBlock(6, 4, heads=2, dim_head=3)
    open_gates(block)
    changed = media.clone()
    changed[0, 1] += 1.0  # the second image of row 0, seen only from its tag onwards
    moved = (block(text, changed, mask) - block(text, media, mask)).abs().sum(-1)
    assert torch.equal(moved[0] > 0, torch.tensor([False, False, False, True, True]))
    assert torch.equal(moved[1], torch.zeros(5))
    assert F.l1_loss(block(text, media, mask), text) > 0
