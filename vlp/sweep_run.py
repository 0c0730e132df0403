"""One sweep run on disk: its resolved config, then ``vlp fit`` and ``vlp test`` as subprocesses.

```
OUT/<run>/config.yaml         the resolved config both stages read (re-run it exactly)
OUT/<run>/run.json            configuration, seed, objective set, overrides
OUT/<run>/checkpoints/last.ckpt
OUT/<run>/fit/metrics.csv     CSVLogger of fit (fit_resumed<N>/ for each resume)
OUT/<run>/test/metrics.csv    CSVLogger of test on the last checkpoint
OUT/<run>/{fit,test}.log      the stages' console output
OUT/<run>/done                written after test succeeds: the run is skipped from then on
```
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlp.sweep_plan import Run, Sweep

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
THROUGHPUT = "vlp.throughput.Throughput"
FIT, RESUMED = "fit", "fit_resumed"


class RunFailed(RuntimeError):
    """A stage of a run exited with an error; its log says why."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.ckpt"

    @property
    def fitted(self) -> Path:
        return self.path / "fit.done"

    @property
    def done(self) -> Path:
        return self.path / "done"

    @property
    def test_metrics(self) -> Path:
        return self.path / "test" / "metrics.csv"

    def fit_attempts(self) -> list[Path]:
        """The fit log folders in the order they ran: ``fit``, ``fit_resumed1``, ..."""
        resumed = sorted(self.path.glob(f"{RESUMED}*"), key=lambda p: int(p.name[len(RESUMED) :]))
        return [p for p in [self.path / FIT, *resumed] if p.is_dir()]

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.info.read_text())


def prepare(sweep: Sweep, run: Run, out: Path) -> RunDir:
    """Resolve the run's config through the real CLI and write it; a changed config starts over.

    A run whose config is unchanged keeps its checkpoint and logs, so it can resume.
    """
    run_dir = RunDir(out / run.name)
    text = yaml.safe_dump(sweep_config(sweep, run, out), sort_keys=False)
    if run_dir.config.exists() and run_dir.config.read_text() != text:
        shutil.rmtree(run_dir.path)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.config.write_text(text)
    info = {
        "name": run.name,
        "index": sweep.runs.index(run),  # the report lists configurations in sweep order
        "configuration": run.configuration,
        "seed": run.seed,
        "objectives": str(run.objectives.path),
        "weights": run.objectives.weights,
        "overrides": sweep.overrides | run.point,
    }
    run_dir.info.write_text(json.dumps(info, indent=2))
    return run_dir


def sweep_config(sweep: Sweep, run: Run, out: Path) -> dict[str, Any]:
    """The base config with the run's objectives, overrides and seed, logging into ``out/<run>``."""
    overrides = sweep.overrides | run.point
    config = resolve_config(
        [
            "--config", str(sweep.base),
            "--model.objectives", str(run.objectives.path),
            *(f"--{key}={cli_value(value)}" for key, value in overrides.items()),
            f"--seed_everything={run.seed}",
            f"--data.seed={run.seed}",
        ]
    )  # fmt: skip
    trainer = config["trainer"]
    trainer["logger"] = {
        "class_path": CSV_LOGGER,
        "init_args": {"save_dir": str(out), "name": run.name, "version": FIT},
    }
    callbacks = trainer.get("callbacks") or []
    checkpoints = [c for c in callbacks if c["class_path"] == CHECKPOINT]
    if not checkpoints:
        checkpoints = [{"class_path": CHECKPOINT, "init_args": {"save_top_k": 0}}]
        callbacks.append(checkpoints[0])
    for checkpoint in checkpoints:
        checkpoint["init_args"]["dirpath"] = str(out / run.name / "checkpoints")
    checkpoints[0]["init_args"]["save_last"] = True
    if all(c["class_path"] != THROUGHPUT for c in callbacks):
        callbacks.append({"class_path": THROUGHPUT})
    trainer["callbacks"] = callbacks
    reweight(config["model"]["objectives"], run.objectives.weights)
    return config


def resolve_config(args: list[str]) -> dict[str, Any]:
    """What ``vlp fit ARGS --print_config`` prints: the fully resolved, validated config."""
    from vlp.cli import run_cli

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            # `vlp sweep`'s own command line is not meant for this parser
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            run_cli(["fit", *args, "--print_config"])
    except SystemExit as exit:
        if exit.code:
            raise ValueError(f"the sweep's config does not parse (see above): {args}") from None
    return yaml.safe_load(printed.getvalue())


def cli_value(value: Any) -> str:
    """An override as the CLI reads it: scalars as text, lists and mappings as JSON."""
    return (
        json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else str(value)
    )


def reweight(objectives: list[dict[str, Any]], weights: dict[str, float]) -> None:
    """Set ``init_args.weight`` of the objectives named in ``weights`` (``itm``, ``mlm``, ...)."""
    names = [_objective_class(o["class_path"]).name for o in objectives]
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"weights for {sorted(unknown)}: the objective set has {names}")
    for name, objective in zip(names, objectives, strict=True):
        if name in weights:
            objective.setdefault("init_args", {})["weight"] = weights[name]


def _objective_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def execute(
    run_dir: RunDir, cwd: Path, env: dict[str, str] | None = None, resume: bool = True
) -> str:
    """Fit (resuming from the last checkpoint when allowed), test, mark done; returns the name.

    Module-level and given plain data, so submitit can pickle it to a cluster node.
    """
    if not run_dir.fitted.exists():
        attempts = run_dir.fit_attempts()
        fit_args = ["--config", str(run_dir.config)]
        if resume and attempts and run_dir.checkpoint.exists():
            version = f"{RESUMED}{len(attempts)}"
            fit_args += [f"--trainer.logger.init_args.version={version}"]
            fit_args += ["--ckpt_path", str(run_dir.checkpoint)]
        else:
            for stale in [*attempts, run_dir.checkpoint.parent]:
                shutil.rmtree(stale, ignore_errors=True)
        _stage(run_dir, "fit", fit_args, cwd, env)
        run_dir.fitted.touch()
    test_args = [
        "--config", str(run_dir.config),
        "--trainer.logger.init_args.version=test",
        "--ckpt_path", str(run_dir.checkpoint),
    ]  # fmt: skip
    _stage(run_dir, "test", test_args, cwd, env)
    run_dir.done.touch()
    return run_dir.name


def _stage(
    run_dir: RunDir, stage: str, args: list[str], cwd: Path, env: dict[str, str] | None
) -> None:
    log = run_dir.path / f"{stage}.log"
    with open(log, "w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "vlp.cli", stage, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
    if code:
        raise RunFailed(f"{run_dir.name}: `vlp {stage}` exited with {code}; see {log}")
