"""Generation from a tiny Flamingo LM: left-padded prompts, greedy and beam search with the
images fixed, cached decoding equal to recomputing every step, stopping at <|endofchunk|>."""

from __future__ import annotations

import pytest
import torch

from tests.flamingo.test_lm import open_gates
from tests.flamingo.tiny_lm import MEDIA_DIM, tiny_lm
from vlp.flamingo import FlamingoLM
from vlp.flamingo.generation import Decoding, generate, prompt_ids

PROMPTS = ["<image>a red circle<|endofchunk|><image>", "<image>question: what colour?"]


@pytest.fixture(scope="module")
def model() -> FlamingoLM:
    lm, tokenizer = tiny_lm("gpt2")
    flamingo = FlamingoLM(lm, tokenizer, MEDIA_DIM).eval()
    open_gates(flamingo)
    return flamingo


def _visual(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 2, 4, MEDIA_DIM, generator=torch.Generator().manual_seed(seed))


def test_prompts_are_left_padded_and_start_like_the_training_text(model: FlamingoLM):
    tokenizer = model.tokenizer
    ids, mask = prompt_ids(tokenizer, ["<image>a red circle<|endofchunk|><image>", "<image>red"])
    long, short = (
        tokenizer(p, add_special_tokens=False)["input_ids"]
        for p in ("<image>a red circle<|endofchunk|><image>", "<image>red")
    )
    cls, pad = tokenizer.cls_token_id, tokenizer.pad_token_id  # MiniLM's text opens with [CLS]
    assert ids.tolist() == [[cls, *long], [pad] * (len(long) - len(short)) + [cls, *short]]
    assert mask.tolist() == [
        [1] * (len(long) + 1),
        [0] * (len(long) - len(short)) + [1] * (len(short) + 1),
    ]


def test_greedy_generation_is_the_argmax_of_full_forwards_with_the_images(model: FlamingoLM):
    visual = _visual()
    generated = generate(model, visual, PROMPTS, Decoding(max_new_tokens=4, num_beams=1))
    for row, prompt in enumerate(PROMPTS):  # one unpadded prompt at a time, no cache
        ids, _ = prompt_ids(model.tokenizer, [prompt])
        start = ids.shape[1]
        for _ in range(4):
            logits = model(ids, visual[row : row + 1]).logits[:, -1]
            logits[:, model.tokens.image] = -float("inf")  # never generated
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        assert generated[row] == model.tokenizer.decode(ids[0, start:], skip_special_tokens=True)
    assert generate(model, torch.zeros_like(visual), PROMPTS, Decoding(4, 1)) != generated


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_decoding_gives_what_recomputing_every_step_gives(model: FlamingoLM, num_beams):
    visual = _visual()
    cached = generate(model, visual, PROMPTS, Decoding(6, num_beams, use_cache=True))
    uncached = generate(model, visual, PROMPTS, Decoding(6, num_beams, use_cache=False))
    assert cached == uncached and all(cached)


def test_each_prompts_beams_see_its_own_images(model: FlamingoLM):
    """Beam search expands rows into beams: the images must be repeated the same way."""
    visual = _visual(seed=1)
    together = generate(model, visual, PROMPTS, Decoding(5, num_beams=3))
    alone = [
        generate(model, visual[i : i + 1], [p], Decoding(5, 3))[0] for i, p in enumerate(PROMPTS)
    ]
    assert together == alone


def test_decoding_stops_at_end_of_chunk(model: FlamingoLM):
    calls = []

    def end_chunk_now(module, inputs, logits):
        calls.append(inputs[0].shape)
        logits[..., model.tokens.end_of_chunk] += 1e4

    hook = model.lm.get_output_embeddings().register_forward_hook(end_chunk_now)
    try:
        out = generate(model, _visual(), PROMPTS, Decoding(8, num_beams=1))
    finally:
        hook.remove()
    assert out == ["", ""] and len(calls) == 1  # the prompt's forward only


def test_prompts_longer_than_the_lm_can_read_are_refused(model: FlamingoLM):
    prompt = "<image>a red circle<|endofchunk|>" * 12 + "<image>"  # 61 tokens + [CLS]
    with pytest.raises(ValueError, match="64 positions"):
        generate(model, torch.zeros(1, 13, 4, MEDIA_DIM), [prompt], Decoding(4, 1))
