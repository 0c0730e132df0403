"""``vlp export`` of a Flamingo model: its LM reloads with plain transformers and gives the
trained LM's logits, and the resampler and blocks are saved under documented keys."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.objectives.flamingo_tiny import TINY_LM, tiny_flamingo, tiny_model
from tests.test_export import tiny_config
from vlp.cli import COMMANDS, run_cli
from vlp.encoders.text import MINILM
from vlp.export import only_flamingo, plain_language_model
from vlp.flamingo.added_tokens import AddedTokenHead
from vlp.flamingo.lm import FlamingoLayer
from vlp.objectives.flamingo import Flamingo

TEXT = ["<image>a red circle<|endofchunk|><image>two squares<|endofchunk|>", "a star <image>"]
FLAMINGO = "objectives.1."
ADDED_ROWS = f"{FLAMINGO}lm.lm.transformer.wte.rows"
ATOL = 1e-5


def flamingo_config(save_dir: Path) -> dict:
    """ITC beside a tiny Flamingo (2-layer GPT-2 of width 32, a block before each layer)."""
    config = tiny_config(save_dir)
    config["model"].pop("fusion")
    config["model"]["objectives"] = [
        {"class_path": "vlp.objectives.contrastive.Contrastive", "init_args": {"embed_dim": 16}},
        {"class_path": "vlp.objectives.flamingo.Flamingo",
         "init_args": {"lm_config": TINY_LM, "tokenizer": MINILM,
                       "fewshot": {"shots": [0], "max_samples": 2},
                       "resampler": {"depth": 1, "heads": 2, "dim_head": 8, "num_latents": 4},
                       "cross_attention": {"heads": 2, "dim_head": 8}}},
    ]  # fmt: skip
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Flamingo, dict, Path]:
    """Fit two steps through the CLI, give the added tokens distinct rows (two steps barely
    move them from their mean start), export through ``vlp export``."""
    root = tmp_path_factory.mktemp("export_flamingo")
    config = root / "flamingo.yaml"
    config.write_text(yaml.safe_dump(flamingo_config(root / "runs")))
    run_cli(["fit", "--config", str(config)])
    checkpoint = next((root / "runs/tiny/version_0/checkpoints").glob("*.ckpt"))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    torch.manual_seed(2)
    saved["state_dict"][ADDED_ROWS] = torch.randn_like(saved["state_dict"][ADDED_ROWS])
    torch.save(saved, checkpoint)
    out = root / "out"
    importlib.import_module(COMMANDS["export"]).main([str(checkpoint), str(out)])
    reference = run_cli(["--config", str(config)], run=False).model
    reference.load_state_dict(saved["state_dict"])
    return reference.eval().objectives[1], saved["state_dict"], out


def close_gates(flamingo: Flamingo) -> None:
    """tanh(0) = 0: every block is the identity, the LM alone is left."""
    with torch.no_grad():
        for block in flamingo.lm.cross_attn_blocks():
            block.attn_gate.zero_()
            block.ff_gate.zero_()


def test_language_model_and_tokenizer_reload_with_plain_transformers(exported) -> None:
    flamingo, _, out = exported
    tokenizer = AutoTokenizer.from_pretrained(out / "language_model")
    lm = AutoModelForCausalLM.from_pretrained(out / "language_model").eval()
    assert type(lm) is type(flamingo.lm.lm)  # the original class, no wrappers
    assert tokenizer.convert_tokens_to_ids("<image>") == flamingo.lm.tokens.image
    encoded = tokenizer(TEXT, padding="longest", return_tensors="pt")
    batch = {k: encoded[k] for k in ("input_ids", "attention_mask")}  # MiniLM's also has types
    trained = flamingo.lm.tokenizer(TEXT, padding="longest", return_tensors="pt")
    assert torch.equal(batch["input_ids"], trained["input_ids"])
    assert (batch["input_ids"] == flamingo.lm.tokens.end_of_chunk).sum() == 2
    close_gates(flamingo)
    with torch.no_grad():
        expected = flamingo.lm(batch["input_ids"], None, batch["attention_mask"]).logits
        logits = lm(**batch).logits
    assert logits.shape[-1] == len(tokenizer)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_flamingo_weights_are_the_resampler_and_blocks_by_decoder_layer(exported) -> None:
    flamingo, state, out = exported
    weights = load_file(out / "flamingo.safetensors")
    expected = {
        f"resampler.{k.removeprefix(f'{FLAMINGO}resampler.')}": v
        for k, v in state.items()
        if k.startswith(f"{FLAMINGO}resampler.")
    }
    for layer in range(TINY_LM["n_layer"]):
        block = f"{FLAMINGO}lm.lm.transformer.h.{layer}.xattn."
        expected |= {
            f"cross_attention.{layer}.{k.removeprefix(block)}": v
            for k, v in state.items()
            if k.startswith(block)
        }
    assert weights.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(weights[key], value), key
    assert "cross_attention.1.attn_gate" in weights
    spec = json.loads((out / "flamingo.json").read_text())
    assert spec["cross_attention_before_layers"] == [0, 1]
    assert spec["media_token_ids"] == {
        "<image>": flamingo.lm.tokens.image,
        "<|endofchunk|>": flamingo.lm.tokens.end_of_chunk,
    }
    assert spec["resampler"]["num_latents"] == 4


def test_heads_hold_no_language_model_or_flamingo_weight(exported) -> None:
    _, _, out = exported
    heads = load_file(out / "heads.safetensors")
    assert "objectives.0.temperature" in heads
    assert not any(key.startswith(FLAMINGO) for key in heads)
    card = (out / "README.md").read_text()
    assert "| `language_model/` |" in card and "| `flamingo.safetensors` |" in card


def test_an_untied_output_layer_gets_its_own_rows_and_the_module_stays_wrapped() -> None:
    flamingo = tiny_flamingo(lm_config={**TINY_LM, "tie_word_embeddings": False})
    tiny_model([flamingo]).eval()
    head = flamingo.lm.lm.get_output_embeddings()
    assert head.rows is not flamingo.lm.lm.get_input_embeddings().rows
    with torch.no_grad():
        for rows in (head.rows, flamingo.lm.lm.get_input_embeddings().rows):
            rows.normal_()
    lm = plain_language_model(flamingo).eval()
    ids = flamingo.lm.tokenizer(TEXT, padding="longest", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = flamingo.lm(ids).logits
        logits = lm(ids).logits
    assert lm.get_output_embeddings().weight is not lm.get_input_embeddings().weight
    assert not any(isinstance(m, (FlamingoLayer, AddedTokenHead)) for m in lm.modules())
    assert isinstance(flamingo.lm.lm.get_output_embeddings(), AddedTokenHead)  # not mutated
    assert len(list(flamingo.lm.cross_attn_blocks())) == TINY_LM["n_layer"]
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_a_model_with_two_flamingo_objectives_is_refused() -> None:
    """An export holds one language model; the second would be silently left out."""
    one, other = tiny_flamingo(), tiny_flamingo()
    assert only_flamingo(SimpleNamespace(objectives=[one])) is one
    assert only_flamingo(SimpleNamespace(objectives=[])) is None
    with pytest.raises(ValueError, match="2 Flamingo objectives"):
        only_flamingo(SimpleNamespace(objectives=[one, other]))
