"""P-tuned Flamingo across runs: started from a Flamingo checkpoint, validated with its
learned prompts, checkpointed with its prompt encoders, exported with their vectors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import load_file

from tests.objectives.flamingo_tiny import tiny_data, tiny_model
from tests.objectives.test_flamingo_ptuning import SIZES, ptuned
from tests.test_export import fit_then_export, tiny_config
from tests.tiny import quiet_trainer
from vlp.datamodules.synthetic import SyntheticScenes
from vlp.evaluation.fewshot import FewShotConfig
from vlp.flamingo.generation import Decoding
from vlp.objectives.contrastive import Contrastive
from vlp.objectives.flamingo import Flamingo

FEWSHOT = FewShotConfig(shots=(0, 2), max_samples=4, support_size=8,
                        caption=Decoding(3, 1), vqa=Decoding(2, 1))  # fmt: skip
PROMPTS = "objectives.1.prompts."


def scenes(split: str, size: int) -> SyntheticScenes:
    return SyntheticScenes(split, size, image_size=32)


@pytest.fixture(scope="module")
def flamingo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """Stage 1: two steps of ITC + Flamingo on captions."""
    model = tiny_model([Contrastive(embed_dim=8), Flamingo(**SIZES)])
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, tiny_data(model, train=scenes("train", 8)))
    path = str(tmp_path_factory.mktemp("stage1") / "flamingo.ckpt")
    trainer.save_checkpoint(path)
    return model.state_dict(), path


def staged(path: str | None = None):
    return tiny_model([Contrastive(weight=0.0, embed_dim=8), ptuned(fewshot=FEWSHOT)],
                      init_from=path)  # fmt: skip


def test_ptuning_starts_from_the_flamingo_run_and_only_its_prompts_are_new(flamingo_checkpoint):
    trained, path = flamingo_checkpoint
    state = staged(path).state_dict()
    assert set(state) - set(trained) == {k for k in state if k.startswith(PROMPTS)}
    assert set(state) - set(trained)
    for key, value in trained.items():
        assert torch.equal(state[key], value), key


def test_validation_logs_learned_hand_and_in_context_scores_and_the_checkpoint_keeps_prompts(
    flamingo_checkpoint, tmp_path: Path
) -> None:
    _, path = flamingo_checkpoint
    model = staged(path)
    data = tiny_data(model, train=scenes("train", 16), val=scenes("val", 4))
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=2, logger=CSVLogger(tmp_path), log_every_n_steps=1
    )
    trainer.fit(model, data)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        logged = {name for row in csv.DictReader(f) for name, value in row.items() if value}
    for name in ("caption/cider_ptuned", "caption/bleu4_ptuned", "vqa/acc_ptuned",
                 "caption/cider_0shot", "vqa/acc_0shot", "caption/cider_2shot"):  # fmt: skip
        assert f"val/{name}" in logged, name
    assert "train/flamingo_ptuning/vqa_loss" in logged
    checkpoint = tmp_path / "ptuned.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    resumed = staged()
    resumed.load_state_dict(saved)
    vectors = model.objectives[1].prompt_vectors()
    assert {k for k in saved if k.startswith(PROMPTS)}
    for task, value in resumed.objectives[1].prompt_vectors().items():
        assert torch.equal(value, vectors[task])


def test_export_writes_the_prompt_vectors_and_encoder_weights(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "runs")
    config["model"].pop("fusion")
    flamingo = {k: v for k, v in SIZES.items() if k in ("lm_config", "tokenizer")}
    config["model"]["objectives"] = [
        {"class_path": "vlp.objectives.contrastive.Contrastive",
         "init_args": {"weight": 0.0, "embed_dim": 16}},
        {"class_path": "vlp.objectives.flamingo_ptuning.FlamingoPromptTuning",
         "init_args": {**flamingo, "tasks": ["caption"], "fewshot": {"shots": [0], "max_samples": 2},
                       "resampler": {"depth": 1, "heads": 2, "dim_head": 8, "num_latents": 4},
                       "cross_attention": {"heads": 2, "dim_head": 8}}},
    ]  # fmt: skip
    checkpoint, out = fit_then_export(tmp_path, config, "ptuning")

    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    heads = load_file(out / "heads.safetensors")
    encoder = {k: v for k, v in trained.items() if k.startswith(PROMPTS)}
    assert encoder and all(torch.equal(heads[k], v) for k, v in encoder.items())
    prompt = staged().objectives[1].prompts["caption"]
    prompt.load_state_dict({k.removeprefix(f"{PROMPTS}caption."): v for k, v in encoder.items()})
    expected = prompt()
    vectors = heads["objectives.1.prompt_vectors.caption"]
    assert vectors.shape == (4, SIZES["lm_config"]["n_embd"])  # the four [P] of the template
    torch.testing.assert_close(vectors, expected.detach(), rtol=0, atol=0)
    spec = json.loads((out / "retrieval.json").read_text())["generation_prompts"]
    assert spec["caption"]["template"] == "[P][P]<image>[P][P]"
    assert spec["caption"]["vectors"] == "objectives.1.prompt_vectors.caption"
