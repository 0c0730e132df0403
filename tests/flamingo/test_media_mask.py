import torch

from vlp.flamingo.media_mask import media_attention_mask, media_index

IMG, EOC, EOS, PAD = 9, 8, 7, 0


def test_spec_worked_example():
    # t0 t1 <img> a b <EOC> <img> c d <EOC> <EOS> <PAD> <PAD>
    ids = torch.tensor([[1, 2, IMG, 3, 4, EOC, IMG, 5, 6, EOC, EOS, PAD, PAD]])
    expected = torch.tensor([[0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]])
    assert torch.equal(media_index(ids, IMG), expected)


def test_mask_lets_each_token_see_only_its_last_image():
    ids = torch.tensor([[1, IMG, 3, IMG, 4], [PAD, PAD, IMG, 3, 4]])  # second row left-padded
    mask = media_attention_mask(media_index(ids, IMG), num_media=2, num_latents=3)
    none, first, second = [False] * 6, [True] * 3 + [False] * 3, [False] * 3 + [True] * 3
    expected = torch.tensor(
        [[none, first, first, second, second], [none, none, first, first, first]]
    )
    assert mask.shape == (2, 5, 6)
    assert torch.equal(mask, expected)


def test_a_tag_without_its_image_attends_nothing():
    ids = torch.tensor([[IMG, 3, IMG, 4]])  # two tags, but only one image was kept
    mask = media_attention_mask(media_index(ids, IMG), num_media=1, num_latents=2)
    assert torch.equal(mask[0].any(-1), torch.tensor([True, True, False, False]))


def test_a_continued_chunk_counts_the_images_before_it():
    ids = torch.tensor([[IMG, 3, IMG, 4, 5, IMG, 6], [1, 2, 3, IMG, 4, 5, 6]])
    whole = media_index(ids, IMG)
    prompt = media_index(ids[:, :4], IMG)
    continued = media_index(ids[:, 4:], IMG, images_before=prompt[:, -1])
    assert torch.equal(torch.cat([prompt, continued], dim=1), whole)


def test_without_only_immediate_media_a_token_sees_every_image_before_it():
    # OpenFlamingo's only_attend_immediate_media=False (spec §3.1 step 4)
    ids = torch.tensor([[1, IMG, 3, IMG, 4, IMG]])
    mask = media_attention_mask(media_index(ids, IMG), 2, num_latents=2, only_immediate=False)
    none, first, both = [False] * 4, [True] * 2 + [False] * 2, [True] * 4
    assert torch.equal(mask[0], torch.tensor([none, first, first, both, both, both]))
