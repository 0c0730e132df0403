"""`vlp.provenance`: the commit of the checkout vlp runs from, dirty or not, versions, and
the machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vlp.provenance import checkout_commit, code_version, cpu_model, describe, machine


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=folder, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def test_the_commit_is_the_checkouts_head_marked_dirty_after_an_edit(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    assert checkout_commit(package) is None  # a checkout that does not track the code
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "code")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert checkout_commit(package) == head[:12]
    (package / "__init__.py").write_text("x = 2\n")
    assert checkout_commit(package) == head[:12] + "-dirty"


def test_outside_a_checkout_there_is_no_commit(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    assert checkout_commit(tmp_path) is None


def test_versions_name_vlp_and_the_libraries_that_decide_numbers() -> None:
    versions = code_version()
    assert {"vlp", "torch", "lightning", "transformers", "timm"} <= set(versions)
    line = describe(versions)
    assert line.startswith(f"vlp {versions['vlp']}") and f"torch {versions['torch']}" in line


def test_the_machine_names_the_cpu_its_cores_and_the_gpus_nvidia_smi_lists(
    tmp_path: Path, monkeypatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\nprintf 'NVIDIA H100 80GB HBM3\\nNVIDIA H100 80GB HBM3\\nNVIDIA L4\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    cores = len(os.sched_getaffinity(0))
    assert machine() == f"{cpu_model()} ({cores} cores), 2× NVIDIA H100 80GB HBM3, 1× NVIDIA L4"
    fake.write_text("#!/bin/sh\nexit 9\n")  # a driver that does not answer: no GPUs
    assert machine() == f"{cpu_model()} ({cores} cores)"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi at all
    assert machine() == f"{cpu_model()} ({cores} cores)"
    assert cpu_model()
