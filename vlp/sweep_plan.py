"""A sweep file and the runs it expands into.

```yaml
base: ../experiments/pretrain_tiny.yaml     # paths are relative to the sweep file
out: runs/sweeps/objectives                 # relative to where `vlp sweep` runs
overrides: {trainer.max_epochs: 8}          # every run
objectives:                                 # one configuration per objective set ...
  - ../objectives/itc.yaml
  - {path: ../objectives/albef.yaml, weights: {itm: 2.0}}   # ... optionally re-weighted
  - {path: ../objectives/tcl.yaml, name: tcl_crop80,         # ... or with overrides of its own
     overrides: {data.second_view.crop_scale: [0.8, 1.0]}}
seeds: [0, 1, 2]
grid:                                       # ... times every combination of these
  model.optimizer.init_args.lr: [5.0e-4, 1.0e-3]
```
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SWEEP_KEYS = {"base", "out", "overrides", "objectives", "seeds", "grid"}
SET_KEYS = {"path", "name", "weights", "overrides"}


@dataclass(frozen=True)
class ObjectiveSet:
    """An objective-set file, with loss weights replaced by objective name (``itm``, ``mlm``)
    and config overrides of its own (applied after the sweep's, before the grid's)."""

    name: str
    path: Path
    weights: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """One training run of the sweep: a configuration and a seed."""

    configuration: str  # the name shared by the seeds of one configuration
    seed: int
    objectives: ObjectiveSet
    point: dict[str, Any]  # this run's grid values (config key -> value)

    @property
    def name(self) -> str:
        return f"{self.configuration}_s{self.seed}"


@dataclass(frozen=True)
class Sweep:
    base: Path
    out: Path
    overrides: dict[str, Any]  # common to every run, before the grid values
    runs: list[Run]

    def overrides_of(self, run: Run) -> dict[str, Any]:
        """Every config override of ``run``: the sweep's, its objective set's, its grid point's."""
        return self.overrides | run.objectives.overrides | run.point


def load_sweep(path: Path) -> Sweep:
    """Read a sweep file and expand its grid; run names are checked to be unique."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(SWEEP_KEYS)}")
    if "base" not in spec or not spec.get("objectives"):
        raise ValueError(f"{path}: a sweep needs a `base` config and a list of `objectives`")
    here = path.parent
    objective_sets = [_objective_set(entry, path) for entry in spec["objectives"]]
    runs = expand(objective_sets, list(spec.get("seeds", [0])), dict(spec.get("grid") or {}))
    return Sweep(
        base=Path(os.path.normpath(here / spec["base"])),
        out=Path(spec.get("out", Path("runs/sweeps") / path.stem)),
        overrides=dict(spec.get("overrides") or {}),
        runs=runs,
    )


def _objective_set(entry: str | dict[str, Any], sweep_file: Path) -> ObjectiveSet:
    if isinstance(entry, str):
        entry = {"path": entry}
    where = f"{sweep_file}: objective set {entry}"
    if set(entry) - SET_KEYS or "path" not in entry:
        raise ValueError(f"{where}: expected a `path` and optionally {sorted(SET_KEYS - {'path'})}")
    file = Path(os.path.normpath(sweep_file.parent / entry["path"]))
    weights = {str(k): float(v) for k, v in (entry.get("weights") or {}).items()}
    overrides = dict(entry.get("overrides") or {})
    if overrides and "name" not in entry:
        raise ValueError(f"{where}: a set with overrides needs a `name`")
    default_name = file.stem + "".join(f"_{k}{label(v)}" for k, v in weights.items())
    return ObjectiveSet(entry.get("name", default_name), file, weights, overrides)


def expand(
    objective_sets: list[ObjectiveSet], seeds: list[int], grid: dict[str, list]
) -> list[Run]:
    """Every (seed, objective set, grid point), seed-major so a cut-short sweep has whole seeds."""
    short = {key: key.rsplit(".", 1)[-1] for key in grid}
    runs = []
    for seed in seeds:
        for objectives in objective_sets:
            for values in itertools.product(*grid.values()):
                point = dict(zip(grid, values, strict=True))
                suffix = "".join(f"_{short[k]}{label(v)}" for k, v in point.items())
                runs.append(Run(objectives.name + suffix, int(seed), objectives, point))
    names = [run.name for run in runs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"sweep runs share names {clashes}: give objective sets distinct `name`s")
    return runs


def label(value: Any) -> str:
    """A short, path-safe rendering of an override value: 0.0005 -> ``5e-4``, a path -> its stem."""
    if isinstance(value, float) and value != 0 and not 1e-3 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:e}".split("e")
        text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    elif isinstance(value, float):
        text = f"{value:g}" if float(f"{value:g}") == value else repr(value)
    elif isinstance(value, str) and ("/" in value or value.endswith((".yaml", ".yml"))):
        text = Path(value).stem
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")
