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


def test_a_medium_is_resampled_the_same_at_any_index_and_a_clip_keeps_its_frame_order():
    # OpenFlamingo (spec §1.1): no per-medium embedding, so a few-shot prompt's k-th image
    # gets the visual tokens that image has alone, as in training.
    model, image, clip = resampler(), torch.randn(1, 1, 1, 5, 8), torch.randn(1, 1, 4, 5, 8)
    other = torch.randn(1, 2, 1, 5, 8)
    document = model(torch.cat([other, image], dim=1))
    torch.testing.assert_close(document[:, 2], model(image)[:, 0])
    clips = model(torch.cat([clip, clip, clip[:, :, [3, 2, 1, 0]]], dim=1))
    torch.testing.assert_close(clips[:, 1], model(clip)[:, 0])
    assert not torch.allclose(clips[:, 2], clips[:, 0], atol=1e-4)


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
