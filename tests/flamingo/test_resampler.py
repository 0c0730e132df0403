import math

import pytest
import torch

from vlp.flamingo.resampler import PerceiverResampler, ResamplerLayer


def resampler() -> PerceiverResampler:
    torch.manual_seed(0)
    return PerceiverResampler(dim=8, depth=2, heads=2, dim_head=4, num_latents=3, max_frames=4)


def test_output_shape_is_latents_per_medium():
    media = torch.randn(2, 3, 4, 5, 8)  # [B, T_media, F_frames, N_tokens, D]
    assert resampler()(media).shape == (2, 3, 3, 8)


def test_frame_order_matters_through_the_time_embeddings():
    model, clip = resampler(), torch.randn(1, 1, 4, 5, 8)
    permuted = clip[:, :, [2, 0, 3, 1]]
    assert not torch.allclose(model(clip), model(permuted), atol=1e-4)
    with torch.no_grad():
        model.frame_time.zero_()  # without them the tokens are an unordered set
    torch.testing.assert_close(model(clip), model(permuted))


def test_media_are_resampled_independently_but_know_their_position():
    model, media = resampler(), torch.randn(1, 2, 1, 5, 8)
    out = model(media)
    changed = media.clone()
    changed[:, 1] += 1.0
    torch.testing.assert_close(model(changed)[:, 0], out[:, 0])
    swapped = model(media[:, [1, 0]])
    assert not torch.allclose(swapped[:, 0], out[:, 1], atol=1e-4)
    with torch.no_grad():
        model.media_time.zero_()
    torch.testing.assert_close(model(media[:, [1, 0]]), model(media)[:, [1, 0]])


def test_too_many_frames_are_refused():
    with pytest.raises(ValueError, match="frames"):
        resampler()(torch.randn(1, 1, 5, 2, 8))


def test_latents_attend_to_media_and_to_themselves():
    torch.manual_seed(0)
    layer = ResamplerLayer(dim=4, heads=1, dim_head=4, ff_mult=2)
    latents, media = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    attn = layer.attn
    q = layer.latent_norm(latents) @ attn.to_q.weight.T
    context = torch.cat([layer.media_norm(media), layer.latent_norm(latents)], dim=1)
    k, v = (context @ attn.to_kv.weight.T).chunk(2, dim=-1)
    weights = (q @ k.transpose(1, 2) / math.sqrt(4)).softmax(dim=-1)  # over 3 media + 2 latents
    expected = latents + weights @ v @ attn.to_out.weight.T
    expected = expected + layer.ff(expected)
    torch.testing.assert_close(layer(latents, media), expected)
