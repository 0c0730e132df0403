"""The fusion stack: text attends to image tokens and ignores padding."""

from __future__ import annotations

import torch

from vlp.encoders import FusionEncoder
from vlp.encoding import Encoding


def make(batch: int = 2, text_len: int = 5, image_len: int = 4):
    fusion = FusionEncoder(text_width=8, image_width=6, depth=2, heads=2).eval()
    text = Encoding(
        pooled=torch.zeros(batch, 8),
        tokens=torch.randn(batch, text_len, 8),
        mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
    )
    image = Encoding(pooled=torch.zeros(batch, 6), tokens=torch.randn(batch, image_len, 6))
    return fusion, text, image


def test_output_depends_on_the_image() -> None:
    fusion, text, image = make()
    other = Encoding(pooled=image.pooled, tokens=torch.randn_like(image.tokens))
    assert not torch.allclose(fusion(text, image).tokens, fusion(text, other).tokens)
    assert fusion(text, image).pooled.shape == (2, 8)
    assert len(fusion(text, image).hidden_states) == 2


def test_padding_tokens_do_not_change_real_tokens() -> None:
    fusion, text, image = make()
    changed = text.tokens.clone()
    changed[0, 3:] = torch.randn(2, 8) * 10
    edited = Encoding(pooled=text.pooled, tokens=changed, mask=text.mask)
    assert torch.allclose(
        fusion(text, image).tokens[0, :3], fusion(edited, image).tokens[0, :3], atol=1e-5
    )


def test_ffn_modules_give_each_layers_mlp_output_before_the_residual() -> None:
    fusion, text, image = make()
    recorded = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: recorded.append(o)) for m in fusion.ffn_modules()
    ]
    out = fusion(text, image)
    for hook in hooks:
        hook.remove()
    image_tokens = fusion.image_to_text(image.tokens)
    x = text.tokens
    for layer, ffn, after in zip(fusion.layers, recorded, out.hidden_states, strict=True):
        q = layer.self_norm(x)
        x = x + layer.self_attn(q, q, q, key_padding_mask=text.mask == 0)[0]
        x = x + layer.cross_attn(layer.cross_norm(x), image_tokens, image_tokens)[0]
        assert torch.allclose(ffn, after - x, atol=1e-5)
        x = after
