"""Run a multi-process script as the distributed tests do, showing its output if it fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(module: str, *args: object, timeout: int = 600) -> None:
    """``python -m module args`` from the repository root (Lightning's launcher re-runs it
    once per process); a failure shows the end of its output, e.g. a rank's traceback."""
    command = [sys.executable, "-m", module, *map(str, args)]
    child = subprocess.run(command, timeout=timeout, capture_output=True, text=True, cwd=ROOT)
    if child.returncode:
        output = (child.stdout + child.stderr)[-8000:]
        raise AssertionError(f"`{' '.join(command)}` exited with {child.returncode}:\n{output}")
