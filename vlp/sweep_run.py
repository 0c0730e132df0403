"""One sweep run on disk: its resolved config, then ``vlp fit`` and ``vlp test`` as subprocesses.

```
OUT/<run>/config.yaml         the resolved config both stages read (re-run it exactly)
OUT/<run>/run.json            configuration, seed, objective set, overrides
OUT/<run>/checkpoints/last.ckpt
OUT/<run>/fit/metrics.csv     CSVLogger of fit (fit_resumed<N>/ for each resume)
OUT/<run>/test/metrics.csv    CSVLogger of test on the last checkpoint
OUT/<run>/{fit,test}.log      the stages' console output
OUT/<run>/code.json           the code (vlp commit, library versions) and machine of every stage run
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlp.provenance import code_version, machine
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

    @property
    def code(self) -> Path:
        return self.path / "code.json"

    def read_code(self) -> list[dict[str, str]]:
        """``[{"stage": "fit", "vlp": ..., "commit": ..., "torch": ...}, ...]`` per stage run."""
        return json.loads(self.code.read_text()) if self.code.exists() else []

    def fit_attempts(self) -> list[Path]:
        """The fit log folders in the order they ran: ``fit``, ``fit_resumed1``, ..."""
        resumed = sorted(self.path.glob(f"{RESUMED}*"), key=lambda p: int(p.name[len(RESUMED) :]))
        return [p for p in [self.path / FIT, *resumed] if p.is_dir()]

    def started(self) -> bool:
        """Whether anything beyond the config and ``run.json`` was written (logs, checkpoints)."""
        return self.path.is_dir() and any(
            p not in (self.config, self.info) for p in self.path.iterdir()
        )

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.info.read_text())


def prepare(
    sweep: Sweep, runs: list[Run], out: Path, discard_changed: bool = False
) -> list[RunDir]:
    """Resolve the runs' configs through the real CLI and write them.

    A run whose experiment is unchanged keeps its checkpoint, logs and ``done`` marker, so
    it resumes or is skipped, also when the sweep's folder moved (:func:`config_changes`).
    A started run whose experiment changed is refused, naming what changed, unless
    ``discard_changed``: hours of results are never deleted by editing a file.
    """
    configs = sweep_configs(sweep, runs, out)
    run_dirs = [RunDir(out / run.name) for run in runs]
    changed = {
        run_dir.name: difference
        for run_dir, config in zip(run_dirs, configs, strict=True)
        if run_dir.started() and (difference := config_changes(run_dir, config))
    }
    if changed and not discard_changed:
        raise ConfigChanged(changed)
    for name in changed:
        shutil.rmtree(out / name)
    return [
        write_run_dir(sweep, run, config, out) for run, config in zip(runs, configs, strict=True)
    ]


class ConfigChanged(ValueError):
    """Started runs whose resolved config is no longer the one they ran with."""

    def __init__(self, changes: dict[str, list[str]]) -> None:
        lines = [f"  {name}: {', '.join(keys[:5])}" for name, keys in changes.items()]
        super().__init__(
            "the config of these started runs changed since they ran:\n"
            + "\n".join(lines)
            + "\nmove their folders aside, or pass --discard-changed to delete them and start over"
        )


def config_changes(run_dir: RunDir, config: dict[str, Any]) -> list[str]:
    """The dotted keys where the experiment ``config`` describes differs from the one
    ``run_dir`` ran, leaving out where and how often results are written (the logger and
    the checkpoint callbacks): moving the sweep folder changes no experiment."""
    before = _leaves(experiment(yaml.safe_load(run_dir.config.read_text())))
    after = _leaves(experiment(config))
    missing = object()
    return sorted(k for k in before | after if before.get(k, missing) != after.get(k, missing))


def experiment(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without its logger and checkpoint callbacks."""
    trainer = {k: v for k, v in (config.get("trainer") or {}).items() if k != "logger"}
    callbacks = trainer.get("callbacks") or []
    trainer["callbacks"] = [c for c in callbacks if c.get("class_path") != CHECKPOINT]
    return {**config, "trainer": trainer}


def _leaves(value: Any, key: str = "") -> dict[str, Any]:
    """``{"model.objectives.0.init_args.weight": 1.0, ...}``: every leaf by its dotted key."""
    if not isinstance(value, (dict, list)) or not value:
        return {key: value}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return {
        leaf: v
        for k, child in items
        for leaf, v in _leaves(child, f"{key}.{k}" if key else str(k)).items()
    }


def write_run_dir(sweep: Sweep, run: Run, config: dict[str, Any], out: Path) -> RunDir:
    """``out/<run>`` with the config and ``run.json``."""
    run_dir = RunDir(out / run.name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.config.write_text(yaml.safe_dump(config, sort_keys=False))
    info = {
        "name": run.name,
        # the report lists configurations in sweep order
        "index": [r.name for r in sweep.runs].index(run.name),
        "configuration": run.configuration,
        "seed": run.seed,
        "objectives": str(run.objectives.path),
        "weights": run.objectives.weights,
        "overrides": sweep.overrides_of(run),
    }
    run_dir.info.write_text(json.dumps(info, indent=2))
    return run_dir


def sweep_configs(sweep: Sweep, runs: list[Run], out: Path) -> list[dict[str, Any]]:
    """Per run: the base config with its objectives, overrides and seed, logging in ``out/<run>``."""
    resolved = resolve_configs(
        [
            [
                "--config", str(sweep.base),
                "--model.objectives", str(run.objectives.path),
                *(f"--{k}={cli_value(v)}" for k, v in sweep.overrides_of(run).items()),
                f"--seed_everything={run.seed}",
                f"--data.seed={run.seed}",
            ]
            for run in runs
        ]
    )  # fmt: skip
    for run, config in zip(runs, resolved, strict=True):
        trainer = config["trainer"]
        trainer["logger"] = {
            "class_path": CSV_LOGGER,
            "init_args": {"save_dir": str(out), "name": run.name, "version": FIT},
        }
        trainer["callbacks"] = sweep_callbacks(trainer.get("callbacks") or [], out / run.name)
        reweight(config["model"]["objectives"], run.objectives.weights)
    return resolved


def sweep_callbacks(callbacks: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """Checkpoints in the run's folder, with ``last.ckpt`` (which test reads, and an
    interrupted run resumes from) the latest epoch's checkpoint; throughput on.

    Lightning writes ``last.ckpt`` only beside a top-k checkpoint, or at the end of fit:
    so an unmonitored checkpoint keeps at least the latest epoch and ``last.ckpt`` links
    to it. A monitored one saves only improvements, so its ``last.ckpt`` (linked or
    copied) would be the best, not the latest: when all are monitored, an unmonitored
    ``latest-*`` checkpoint is added to write ``last.ckpt``.
    """
    checkpoints = [c for c in callbacks if c["class_path"] == CHECKPOINT]
    latest = next((c for c in checkpoints if not c["init_args"].get("monitor")), None)
    if latest is None:  # none given, or all monitored: one more keeps the latest epoch
        named = {"filename": "latest-{epoch}-{step}"} if checkpoints else {}
        latest = {"class_path": CHECKPOINT, "init_args": named}
        checkpoints.append(latest)
    for checkpoint in checkpoints:
        settings = checkpoint["init_args"]
        settings["dirpath"] = str(run_dir / "checkpoints")
        settings["save_last"] = "link" if checkpoint is latest else False
    if latest["init_args"].get("save_top_k", 1) == 0:
        latest["init_args"]["save_top_k"] = 1
    others = [c for c in callbacks if c["class_path"] not in (CHECKPOINT, THROUGHPUT)]
    return [*others, *checkpoints, {"class_path": THROUGHPUT}]


def installed_vlp(entry: str) -> list[str]:
    """A command running ``entry`` (``module:function``) of the installed vlp in a fresh interpreter.

    Not ``python -m``: that puts the working directory first on ``sys.path``, where a
    checkout's ``vlp/`` folder shadows a non-editable install (whose ``vlp`` package also
    holds ``objectives`` and ``datamodules``). The ``vlp`` console script has no such entry.
    """
    module, function = entry.split(":")
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if p]; "  # drop the working directory
        f"from {module} import {function}; {function}()"
    )
    return [sys.executable, "-c", code]


def resolve_configs(arg_lists: list[list[str]]) -> list[dict[str, Any]]:
    """What ``vlp fit ARGS --print_config`` prints for each ARGS: resolved, validated configs.

    Parsed in a fresh interpreter, as ``vlp fit`` parses: jsonargparse's type resolution
    depends on the modules already imported (after ``import rich.console``, an override
    ``limit_train_batches=3`` comes back as ``3.0``, which Lightning reads as a fraction).
    """
    child = subprocess.run(
        installed_vlp("vlp.sweep_run:print_configs"),
        input=json.dumps(arg_lists),
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.returncode:
        raise ValueError("a run's config does not parse; the error is printed above")
    return [yaml.safe_load(text) for text in json.loads(child.stdout)]


def print_configs() -> None:
    """The child of ``resolve_configs``: argument lists as JSON on stdin, configs on stdout."""
    from vlp.cli import run_cli

    printed = []
    for args in json.load(sys.stdin):
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                run_cli(["fit", *args, "--print_config"])
        except SystemExit as exit:
            if exit.code:
                raise SystemExit(f"vlp sweep: cannot parse `vlp fit {' '.join(args)}`") from None
        printed.append(buffer.getvalue())
    json.dump(printed, sys.stdout)


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
) -> None:
    """Fit (resuming from the last checkpoint when allowed), then test, then mark done.

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


def _stage(
    run_dir: RunDir, stage: str, args: list[str], cwd: Path, env: dict[str, str] | None
) -> None:
    run_dir.code.write_text(
        json.dumps(
            [*run_dir.read_code(), {"stage": stage, "machine": machine(), **code_version()}],
            indent=2,
        )
    )
    log = run_dir.path / f"{stage}.log"
    with open(log, "w") as out:
        code = subprocess.call(
            [*installed_vlp("vlp.cli:main"), stage, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
    if code:
        raise RunFailed(f"{run_dir.name}: `vlp {stage}` exited with {code}; see {log}")
