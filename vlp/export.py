"""``vlp export CKPT OUT``: a trained checkpoint as a folder that loads without vlp.

    vlp export runs/quickstart/checkpoints/last.ckpt exported/quickstart

``OUT`` holds:

- ``text_encoder/``: Hugging Face ``save_pretrained`` model and tokenizer
  (``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``);
- ``vision_encoder/``: timm ``config.json`` + ``model.safetensors``
  (``timm.create_model("local-dir:OUT/vision_encoder", pretrained=True)``);
- ``heads.safetensors``: every other inference weight (projection heads,
  temperatures, fusion encoder, ITM head) under its name in the module;
- with a Flamingo objective, ``language_model/``: its causal LM as the LM's own
  Hugging Face class (``AutoModelForCausalLM``), embedding and output layer resized to
  the tokenizer saved beside it, the added ``<image>``/``<|endofchunk|>`` rows the
  trained ones; ``flamingo.safetensors``: the Perceiver Resampler (``resampler.*``)
  and each gated cross-attention block under the index of the decoder layer it precedes
  (``cross_attention.<i>.*``); ``flamingo.json``: those layers, the sizes and the
  media token ids;
- with an image–text embedding objective (ITC and friends), ``retrieval.json``: which
  heads, pooling and preprocessing make the shared image–text embedding, and with
  learned prompts (CoOp) which weights hold them, the template they fill and the class
  names; for a P-tuned Flamingo, each task's template
  and the names of its prompt vectors (``…prompt_vectors.<task>`` in the heads, the
  encoder's output, beside the encoder's weights); and ``image_tower.onnx`` /
  ``text_tower.onnx``: images, or text ids and mask, to L2-normalised embeddings, with
  dynamic batch (and text length) axes. Without one (data2vec or Flamingo alone) these
  three are skipped and a P-tuned Flamingo's templates go to ``flamingo.json``;
- ``config.yaml``: the run's resolved config; ``README.md``: a model card with
  the run's metrics.

The checkpoint is read weights-only and the module is rebuilt from the
config, so exporting never runs code stored in a checkpoint. EMA teachers and
feature queues are training state: they stay in the Lightning checkpoint.
"""

from __future__ import annotations

import copy
import csv
import inspect
import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import auto_cli
from lightning.pytorch.cli import LightningArgumentParser
from safetensors.torch import save_file
from timm.models import save_for_hf
from torch import Tensor, nn
from transformers import PreTrainedModel

from vlp.datamodules.datamodule import VLPDataModule
from vlp.evaluation.evaluator import Embedder
from vlp.flamingo import END_OF_CHUNK, IMAGE, FlamingoLM, PerceiverResampler
from vlp.flamingo.cross_attention import GatedCrossAttentionBlock
from vlp.flamingo.lm import decoder_layers
from vlp.module import VLPModule
from vlp.objectives.flamingo import Flamingo
from vlp.queues import FeatureQueue
from vlp.sweep_run import RunDir
from vlp.teachers import EMATeacher

CONFIG = "config.yaml"
METRICS = "metrics.csv"
TOWERS = ("encoders.vision.model.", "encoders.text.model.")  # saved by timm / transformers
SAMPLE_CAPTIONS = ["a red circle", "a small blue square to the left of a large green triangle"]
# timm's name for the evaluation transform (vlp.datamodules.transforms.eval_transform):
# shorter side resized to the image size (bilinear, antialiased), then a centre crop of it.
EVAL_RESIZE = {"crop_pct": 1.0, "interpolation": "bilinear", "crop_mode": "center"}


def run_folders(checkpoint: Path) -> list[Path]:
    """Logger folders of the run that wrote ``checkpoint``, oldest first.

    Lightning's default keeps checkpoints in ``<run>/version_<n>/checkpoints/``,
    beside that version's ``config.yaml`` and ``metrics.csv``; a
    ``ModelCheckpoint(dirpath=<run>/checkpoints)`` (the quickstart) keeps them
    beside the ``version_<n>`` folders of every fit and test that used them; a sweep's
    run folder holds its ``config.yaml`` above ``checkpoints/`` (its stages' logs:
    :func:`logger_folders`).
    """
    above = checkpoint.resolve().parent.parent
    if (above / CONFIG).is_file():
        return [above]
    versions = [p for p in above.glob("version_*") if (p / CONFIG).is_file()]
    return sorted(versions, key=lambda p: int(re.sub(r"\D", "", p.name) or 0))


def build_model(config: dict[str, Any]) -> VLPModule:
    """The module the config describes, through the CLI's own argument types (no data needed);
    never from ``init_from`` (the trained checkpoint holds every weight), and eager: the
    exporters trace it, compiled layers would stand in their way."""
    parser = LightningArgumentParser(parser_mode="omegaconf")
    parser.add_lightning_class_args(VLPModule, "model", subclass_mode=False)
    model = {**config["model"], "init_from": None, "compile_layers": False}
    return parser.instantiate(parser.parse_object({"model": model})).model


def data_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config's data section over the data module's defaults (a hand-written config may omit them)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(VLPDataModule).parameters.items()
    }
    return {**defaults, **(config.get("data") or {})}


def load_trained(checkpoint: Path, config: dict[str, Any]) -> VLPModule:
    if checkpoint.is_dir():
        raise ValueError(
            f"{checkpoint} is a sharded (distributed) checkpoint folder, whose metadata only "
            "unpickling reads: fit sharded with ModelParallelStrategy's "
            "save_distributed_checkpoint: false to save checkpoints whole"
        )
    model = build_model(config)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model.eval()


def head_weights(model: VLPModule) -> dict[str, Tensor]:
    """Every weight the tower and Flamingo files do not hold (e.g. data2vec's mask token
    stays); EMA teachers and queues are training state and are left out. Each is its own
    copy: safetensors refuses tensors that share memory."""
    elsewhere = tuple(
        f"{name}."
        for name, module in model.named_modules()
        if isinstance(module, (EMATeacher, FeatureQueue, FlamingoLM, PerceiverResampler))
    )
    return {
        name: tensor.detach().clone(memory_format=torch.contiguous_format)
        for name, tensor in model.state_dict().items()
        if not name.startswith(TOWERS + elsewhere)
    }


def plain_language_model(flamingo: Flamingo) -> PreTrainedModel:
    """A copy of Flamingo's LM as its own Hugging Face class, loadable by plain transformers:
    decoder layers unwrapped, embedding (and an untied output layer) resized to the
    tokenizer with the added tokens, their rows the trained ones. The trained module is
    left as it is."""
    lm = copy.deepcopy(flamingo.lm.lm)
    layers = decoder_layers(lm, flamingo.layers_path)
    for i, layer in enumerate(layers):
        layers[i] = layer.decoder_layer
    embedding, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    lm.set_input_embeddings(embedding.base)
    lm.set_output_embeddings(head.base)
    lm.resize_token_embeddings(head.vocab_size, mean_resizing=False)  # re-ties tied matrices
    added = embedding.added_ids
    with torch.no_grad():
        lm.get_input_embeddings().weight[added] = embedding.rows
        if head.rows is not embedding.rows:
            output = lm.get_output_embeddings()
            output.weight[added] = head.rows
            if getattr(output, "bias", None) is not None:
                output.bias[added] = 0  # AddedTokenHead's added logits have no bias
    return lm


def cross_attention_blocks(flamingo: Flamingo) -> dict[int, GatedCrossAttentionBlock]:
    """Each gated cross-attention block by the index of the decoder layer it precedes."""
    layers = decoder_layers(flamingo.lm.lm, flamingo.layers_path)
    return {i: layer.xattn for i, layer in enumerate(layers) if layer.xattn is not None}


def flamingo_weights(flamingo: Flamingo) -> dict[str, Tensor]:
    """The resampler (``resampler.*``) and the blocks (``cross_attention.<i>.*``)."""
    blocks = {f"cross_attention.{i}": b for i, b in cross_attention_blocks(flamingo).items()}
    return {
        f"{prefix}.{name}": tensor.detach().clone(memory_format=torch.contiguous_format)
        for prefix, module in {"resampler": flamingo.resampler, **blocks}.items()
        for name, tensor in module.state_dict().items()
    }


def flamingo_spec(flamingo: Flamingo, media_dim: int) -> dict[str, Any]:
    """What ``flamingo.safetensors`` holds and how the blocks sit in the exported LM."""
    tokens = flamingo.lm.tokens
    return {
        "media_token_ids": {IMAGE: tokens.image, END_OF_CHUNK: tokens.end_of_chunk},
        "media": "vision_encoder patch tokens [B, T, F, N, D] -> resampler -> [B, T, latents, D]",
        "media_dim": media_dim,
        "resampler": asdict(flamingo.resampler_config),
        "cross_attention": asdict(flamingo.cross_attention),
        "cross_attention_before_layers": list(cross_attention_blocks(flamingo)),
        "block": "y = x + tanh(attn_gate) * attn(norm(x), media); "
        "out = y + tanh(ff_gate) * ff(y); then decoder layer i",
    }


def export_flamingo(
    flamingo: Flamingo, media_dim: int, out: Path, extra: dict[str, Any] | None = None
) -> None:
    """Write ``language_model/``, ``flamingo.safetensors`` and ``flamingo.json`` (with
    ``extra`` entries, e.g. generation prompts when there is no ``retrieval.json``)."""
    plain_language_model(flamingo).save_pretrained(out / "language_model")
    flamingo.lm.tokenizer.save_pretrained(out / "language_model")
    save_file(flamingo_weights(flamingo), out / "flamingo.safetensors")
    spec = flamingo_spec(flamingo, media_dim) | (extra or {})
    (out / "flamingo.json").write_text(json.dumps(spec, indent=2))


def module_name(model: nn.Module, target: nn.Module) -> str:
    return next(name for name, module in model.named_modules() if module is target)


class ImageTower(nn.Module):
    """Images → normalised embeddings, as retrieval computes them."""

    def __init__(self, model: VLPModule, embedder: Embedder) -> None:
        super().__init__()
        self.vision = model.encoders.vision
        self.embedder = embedder

    def forward(self, images: Tensor) -> Tensor:
        return self.embedder.embed_image(self.vision(images))


class TextTower(nn.Module):
    """Token ids and attention mask → normalised embeddings."""

    def __init__(self, model: VLPModule, embedder: Embedder) -> None:
        super().__init__()
        self.text = model.encoders.text
        self.embedder = embedder

    def forward(self, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        return self.embedder.embed_text(self.text(text_ids, text_mask))


def export_onnx(model: VLPModule, embedder: Embedder, image_size: int, out: Path) -> None:
    batch, length = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
    images = torch.zeros(2, 3, image_size, image_size)
    torch.onnx.export(
        ImageTower(model, embedder).eval(),
        (images,),
        out / "image_tower.onnx",
        input_names=["images"],
        output_names=["image_embeddings"],
        dynamic_shapes={"images": {0: batch}},
        verbose=False,
    )
    tokens = model.encoders.text.tokenize(SAMPLE_CAPTIONS)
    torch.onnx.export(
        TextTower(model, embedder).eval(),
        (tokens["text_ids"], tokens["text_mask"]),
        out / "text_tower.onnx",
        input_names=["text_ids", "text_mask"],
        output_names=["text_embeddings"],
        dynamic_shapes={"text_ids": {0: batch, 1: length}, "text_mask": {0: batch, 1: length}},
        verbose=False,
    )


def retrieval_spec(model: VLPModule, embedder: Embedder, data: dict[str, Any]) -> dict[str, Any]:
    """What turns tower outputs into the shared embedding space, for users without vlp."""
    prefix = module_name(model, embedder)
    text = model.encoders.text
    return {
        "objective": f"{type(embedder).__module__}.{type(embedder).__qualname__}",
        "image_projection": f"{prefix}.image_proj",
        "text_projection": f"{prefix}.text_proj",
        **embedder.score_weights(prefix),
        "image_pooling": "timm forward_head(pre_logits=True)",
        "text_pooling": text.pooling,
        "max_length": text.tokenize.max_length,
        "image_size": data["image_size"],
        "mean": list(data["mean"]),
        "std": list(data["std"]),
    }


def logger_folders(folders: list[Path]) -> list[Path]:
    """``folders``, each sweep run folder (``run.json`` beside its config) followed by its
    stages' logger folders in the order they ran: fit, each resume, test."""
    found = []
    for folder in folders:
        found.append(folder)
        run = RunDir(folder)
        if run.info.is_file():
            found += [*run.fit_attempts(), run.test_metrics.parent]
    return found


def last_metrics(folders: list[Path]) -> dict[str, tuple[str, str, str]]:
    """The last logged value of every metric: name → (value, step, file)."""
    found: dict[str, tuple[str, str, str]] = {}
    for folder in logger_folders(folders):
        path = folder / METRICS
        if not path.is_file():
            continue
        with path.open() as f:
            for row in csv.DictReader(f):
                for name, value in row.items():
                    if value and name not in ("epoch", "step"):
                        found[name] = (value, row.get("step", ""), f"{folder.name}/{METRICS}")
    return found


FLAMINGO_FILES = """\
| `language_model/` | Flamingo's causal LM (no cross-attention) + tokenizer with `<image>`, `<|endofchunk|>` | `AutoModelForCausalLM.from_pretrained`, `AutoTokenizer.from_pretrained` |
| `flamingo.safetensors` | Perceiver Resampler `resampler.*`, gated cross-attention block before decoder layer i `cross_attention.<i>.*` | `safetensors.torch.load_file` |
| `flamingo.json` | which decoder layers get a block, sizes, media token ids | `json.load` |
"""


def retrieval_card(spec: dict[str, Any] | None) -> tuple[str, str]:
    """The card's retrieval file rows and the paragraph on the embedding (or on its absence)."""
    if spec is None:
        return (
            "",
            "No image–text embedding objective: no retrieval towers (`retrieval.json`, ONNX).\n",
        )
    size = spec["image_size"]
    rows = f"""\
| `retrieval.json` | heads, pooling and preprocessing of the embedding | `json.load` |
| `image_tower.onnx` | `images` [B, 3, {size}, {size}] → `image_embeddings` [B, D] | `onnxruntime.InferenceSession` |
| `text_tower.onnx` | `text_ids`, `text_mask` [B, L] → `text_embeddings` [B, D] | `onnxruntime.InferenceSession` |
"""
    paragraph = f"""\
Embeddings are L2-normalised: image = normalise(`{spec["image_projection"]}`(pooled image)),
text = normalise(`{spec["text_projection"]}`({spec["text_pooling"]}-pooled last hidden state)).
Images are resized (bilinear, antialiased) so that their shorter side is {size} px,
centre-cropped to {size}×{size} and normalised with mean {spec["mean"]} and std {spec["std"]}
(as `vision_encoder/`'s timm config says);
captions are truncated to {spec["max_length"]} tokens.
"""
    return rows, paragraph


def model_card(
    config: dict[str, Any],
    heads: dict[str, Tensor],
    metrics: dict[str, tuple[str, str, str]],
    spec: dict[str, Any] | None,
    flamingo: bool = False,
) -> str:
    """The model card; ``spec`` is the retrieval spec, None without an embedding objective."""
    objectives = "\n".join(
        f"- `{o['class_path']}` (weight {(o.get('init_args') or {}).get('weight', 1.0)})"
        for o in config["model"]["objectives"]
    )
    flamingo_rows = FLAMINGO_FILES if flamingo else ""
    retrieval_rows, embedding = retrieval_card(spec)
    head_rows = "\n".join(f"| `{k}` | {list(v.shape)} |" for k, v in sorted(heads.items()))
    if metrics:
        metric_rows = "\n".join(
            f"| `{k}` | {float(v):.4g} | {step} | `{path}` |"
            for k, (v, step, path) in sorted(metrics.items())
        )
        metric_table = f"| metric | value | step | from |\n|---|---|---|---|\n{metric_rows}"
    else:
        metric_table = (
            "No `metrics.csv` was found beside the checkpoint's run: no metrics recorded."
        )
    return f"""# vlp export

A vision-language model trained with `vlp`; everything here loads without `vlp`.

## Objectives
{objectives}

## Files
| path | what | load with |
|---|---|---|
| `text_encoder/` | Hugging Face text tower + tokenizer | `AutoModel.from_pretrained`, `AutoTokenizer.from_pretrained` |
| `vision_encoder/` | timm image tower | `timm.create_model("local-dir:<path>", pretrained=True)` |
| `heads.safetensors` | every other weight: heads, temperatures, fusion encoder, mask token (keys below) | `safetensors.torch.load_file` |
{retrieval_rows}{flamingo_rows}| `config.yaml` | the run's resolved config | `vlp fit --config config.yaml` re-runs it |

{embedding}
## heads.safetensors
| key | shape |
|---|---|
{head_rows}

## Metrics
{metric_table}
"""


def export_towers(model: VLPModule, data: dict[str, Any], out: Path) -> None:
    """Write ``text_encoder/`` (transformers) and ``vision_encoder/`` (timm)."""
    text = model.encoders.text
    text.model.save_pretrained(out / "text_encoder")
    text.tokenizer.save_pretrained(out / "text_encoder")
    save_for_hf(
        model.encoders.vision.model,
        out / "vision_encoder",
        safe_serialization=True,
        data_config={
            "img_size": data["image_size"],
            "mean": data["mean"],
            "std": data["std"],
            **EVAL_RESIZE,
        },
    )


def learned_prompts(model: VLPModule, heads: dict[str, Tensor]) -> dict[str, Any]:
    """Where learned prompts live and how they are used (CoOp: ``zeroshot_prompts``;
    P-tuned generation: ``generation_prompts``); adds each task's output vectors h_1..h_m
    to ``heads``, all inference needs of a prompt encoder."""
    prompts: dict[str, Any] = {}
    prompted = model.evaluator.prompt_classifier
    if prompted is not None:
        prompts["zeroshot_prompts"] = prompted.prompt_spec(module_name(model, prompted))
    for objective in model.objectives:
        if hasattr(objective, "prompt_vectors"):
            prefix = module_name(model, objective)
            vectors = objective.prompt_vectors().items()
            heads |= {f"{prefix}.prompt_vectors.{task}": v for task, v in vectors}
            prompts["generation_prompts"] = objective.prompt_spec(prefix)
    return prompts


def export_retrieval(model: VLPModule, embedder: Embedder, spec: dict[str, Any], out: Path) -> None:
    """Write ``retrieval.json`` and the two ONNX towers of the image–text embedding."""
    (out / "retrieval.json").write_text(json.dumps(spec, indent=2))
    with torch.no_grad():
        export_onnx(model, embedder, spec["image_size"], out)


def export(checkpoint: Path, out: Path, run_config: Path | None = None) -> Path:
    """Write the export folder; returns ``out``.

    Args:
        checkpoint: a Lightning checkpoint written by ``vlp fit``.
        out: destination folder (created; existing files are overwritten).
        run_config: the run's resolved ``config.yaml``; by default the newest
            one the run's logger wrote beside the checkpoint.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    folders = run_folders(checkpoint)
    if run_config is None:
        if not folders:
            raise FileNotFoundError(
                f"no {CONFIG} found for {checkpoint}: pass --run_config with the run's config"
            )
        run_config = folders[-1] / CONFIG
    settings = yaml.safe_load(Path(run_config).read_text())
    model = load_trained(checkpoint, settings)
    flamingo = only_flamingo(model)
    data = data_settings(settings)
    out.mkdir(parents=True, exist_ok=True)
    export_towers(model, data, out)
    heads = head_weights(model)
    prompts = learned_prompts(model, heads)
    embedder = model.evaluator.embedder
    spec = None if embedder is None else retrieval_spec(model, embedder, data) | prompts
    if flamingo is not None:
        prompts_here = prompts if spec is None else None  # else they go to retrieval.json
        export_flamingo(flamingo, model.encoders.vision.width, out, prompts_here)
    save_file(heads, out / "heads.safetensors")
    if spec is not None:
        export_retrieval(model, embedder, spec, out)
    shutil.copyfile(run_config, out / CONFIG)
    card = model_card(settings, heads, last_metrics(folders), spec, flamingo=flamingo is not None)
    (out / "README.md").write_text(card)
    readable_by_all(out)
    return out


def only_flamingo(model: VLPModule) -> Flamingo | None:
    """The model's Flamingo objective, if any; refused when there are several (e.g. Flamingo
    beside a P-tuned Flamingo), since an export holds one language model."""
    flamingos = [o for o in model.objectives if isinstance(o, Flamingo)]
    if len(flamingos) > 1:
        raise ValueError(
            f"the model has {len(flamingos)} Flamingo objectives, and an export holds one "
            "language model: export a run whose model has one"
        )
    return flamingos[0] if flamingos else None


def readable_by_all(out: Path) -> None:
    """Give every exported file the mode a plain write would (0644 under umask 022):
    safetensors writes its files 0600, unreadable to the others who load the export."""
    umask = os.umask(0)
    os.umask(umask)
    for path in out.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def main(args: list[str] | None = None) -> None:
    auto_cli(export, args=args, prog="vlp export")
