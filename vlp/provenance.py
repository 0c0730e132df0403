"""Which code made a result (vlp's version and commit, and the versions it ran on), and
on which machine.

A comparison table is fair only if every row ran the same code on the same hardware;
sweeps record both per stage of a run, and ``vlp report`` says whether the rows agree.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: the distributions whose versions decide a run's numbers
PACKAGES = ("vlp", "torch", "lightning", "transformers", "timm")


def code_version() -> dict[str, str]:
    """``{"vlp": "0.1.0", "commit": "1a2b3c4d5e6f-dirty", "torch": ..., ...}``; the commit
    only when vlp runs from a git checkout (an editable install), ``-dirty`` when that
    checkout's tracked files differ from the commit."""
    versions = {name: _version(name) for name in PACKAGES}
    commit = checkout_commit(Path(__file__).parent)
    return (
        versions if commit is None else {"vlp": versions.pop("vlp"), "commit": commit, **versions}
    )


def checkout_commit(folder: Path) -> str | None:
    """The HEAD commit of the git checkout whose tracked files include ``folder``'s code."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)

    try:
        tracked = git("ls-files", "--error-unmatch", "__init__.py").returncode == 0
        head = git("rev-parse", "HEAD")
        dirty = git("diff", "--quiet", "HEAD", "--").returncode != 0
    except OSError:  # no git
        return None
    if not tracked or head.returncode:
        return None
    return head.stdout.strip()[:12] + ("-dirty" if dirty else "")


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def describe(versions: dict[str, str]) -> str:
    """One line: ``vlp 0.1.0 (1a2b3c4d5e6f), torch 2.14.1, ...``."""
    vlp = versions.get("vlp", "?") + (f" ({versions['commit']})" if "commit" in versions else "")
    others = [f"{name} {v}" for name, v in versions.items() if name not in ("vlp", "commit")]
    return ", ".join([f"vlp {vlp}", *others])


def machine() -> str:
    """``"AMD EPYC 9R14 (2 cores), 1× NVIDIA H100 80GB HBM3"``: the CPU model with the
    cores this process may use, and the machine's CUDA devices."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = [f"{count}× {name}" for name, count in Counter(cuda_devices()).items()]
    return ", ".join([f"{cpu_model()} ({cores} cores)", *gpus])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cuda_devices() -> list[str]:
    """The names of the machine's NVIDIA GPUs, from ``nvidia-smi``: asking torch would
    start a CUDA context in the sweep's own process, which holds GPU memory."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode:
        return []
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]
