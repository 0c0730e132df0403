"""The Hugging Face text tower: tiny configs, the offline MiniLM, pooling, no remote code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from tests.tiny import TINY_TEXT
from vlp.encoders import TextEncoder
from vlp.encoders.text import MINILM
from vlp.paths import resolve_model_path


def test_tiny_config_gives_tokens_pooled_and_layers(tiny_text) -> None:
    batch = tiny_text.tokenize(["a red circle left of a blue square", "a star"])
    out = tiny_text(**batch)
    assert out.tokens.shape == (2, batch["text_ids"].shape[1], 32)
    assert torch.equal(out.pooled, out.tokens[:, 0])
    assert len(out.hidden_states) == 2
    assert batch["text_mask"][1].sum() < batch["text_mask"][0].sum()


def test_captions_are_truncated_to_max_length(tiny_text) -> None:
    batch = tiny_text.tokenize(["word " * 100])
    assert batch["text_ids"].shape[1] == 16


def test_mean_pooling_ignores_padding() -> None:
    from tests.tiny import TINY_TEXT

    encoder = TextEncoder(config=TINY_TEXT, pooling="mean").eval()
    batch = encoder.tokenize(["a red circle", "a much longer caption about a blue square"])
    both = encoder(**batch).pooled[0]
    alone = encoder(**encoder.tokenize(["a red circle"])).pooled[0]
    assert torch.allclose(both, alone, atol=1e-5)


def test_offline_minilm_package_loads_pretrained_weights() -> None:
    encoder = TextEncoder(MINILM, pooling="mean").eval()
    with torch.no_grad():
        out = encoder(
            **encoder.tokenize(["a red circle", "a crimson disc", "tax law reform"])
        ).pooled
    sims = F.normalize(out, dim=-1) @ F.normalize(out, dim=-1).T
    assert encoder.width == 384
    assert TextEncoder(MINILM).model.training  # dropout as configured once training starts
    assert sims[0, 1] > sims[0, 2]  # a trained model, not random weights


def test_package_paths_fail_clearly() -> None:
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(FileNotFoundError, match="no installed package"):
        resolve_model_path("package:not_a_real_pkg/model")


def test_ffn_modules_give_each_layers_ffn_output_before_residual_and_norm(tiny_text) -> None:
    tiny_text.eval()
    batch = tiny_text.tokenize(["a red circle left of a blue square", "a star and a moon"])
    batch["text_mask"] = torch.ones_like(batch["text_mask"])  # no padding: plain attention
    recorded = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: recorded.append(o)) for m in tiny_text.ffn_modules()
    ]
    out = tiny_text(**batch)
    for hook in hooks:
        hook.remove()
    x = tiny_text.model.embeddings(input_ids=batch["text_ids"])
    for layer, ffn, hidden in zip(
        tiny_text.model.encoder.layer, recorded, out.hidden_states, strict=True
    ):
        attended = layer.attention(x)[0]
        expected = layer.output.dense(layer.intermediate(attended))
        assert torch.allclose(ffn, expected, atol=1e-5)
        assert torch.allclose(layer.output.LayerNorm(ffn + attended), hidden, atol=1e-5)
        x = hidden


def test_a_tokenizer_saved_to_pad_left_pads_right(tmp_path: Path) -> None:
    """[CLS] pooling and the fusion encoder read position 0 as the caption's first token."""
    saved = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    saved.padding_side = "left"
    saved.save_pretrained(tmp_path)
    encoder = TextEncoder(config=TINY_TEXT, tokenizer=str(tmp_path), max_length=16)
    batch = encoder.tokenize(["a circle", "a small red circle left of a blue square"])
    assert (batch["text_ids"][:, 0] == saved.cls_token_id).all()
    assert batch["text_mask"][0, 0] == 1 and batch["text_mask"][0, -1] == 0
