"""``vlp sweep FILE``: fit and test every run of a sweep file, here or on SLURM.

    vlp sweep configs/sweeps/objectives.yaml --dry-run        # list the runs
    vlp sweep configs/sweeps/objectives.yaml --parallel 2     # two runs at a time
    vlp sweep configs/sweeps/objectives.yaml --executor slurm --partition gpu --gpus-per-run 1
    vlp report runs/sweeps/objectives                         # the table and plots

The file format is in ``vlp.sweep_plan``, a run's folder in ``vlp.sweep_run``. Running the
same command again skips finished runs and resumes unfinished ones from their last checkpoint
(``--restart`` re-runs them from scratch). A started run whose experiment changed is
refused (``--discard-changed`` deletes it and starts over); the logger and checkpoint
settings, and so a moved sweep folder, are no change.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import os
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from vlp.sweep_plan import Run, Sweep, load_sweep
from vlp.sweep_run import ConfigChanged, RunDir, execute, prepare


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vlp sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="the sweep YAML")
    parser.add_argument("--out", type=Path, help="where runs go (default: the file's `out`)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    parser.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="only runs whose name matches, e.g. 'albef_*' or 'tcl*_s0' (repeatable)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        help="runs at once: here 1 by default, GPUs / CPU threads split evenly; "
        "on SLURM the job array's limit (default: none)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="an override for every run on top of the file's (VALUE is YAML), e.g. "
        "trainer.accelerator=gpu; repeatable",
    )
    parser.add_argument(
        "--restart", action="store_true", help="unfinished runs start over, not from last.ckpt"
    )
    parser.add_argument(
        "--discard-changed",
        action="store_true",
        help="delete started runs whose config changed and start them over (default: refuse)",
    )
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    slurm = parser.add_argument_group("slurm (one job per run, as a job array)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", type=int, default=240, help="minutes per run")
    slurm.add_argument("--gpus-per-run", type=int, default=1)
    slurm.add_argument("--cpus-per-run", type=int, default=8)
    slurm.add_argument("--mem-gb", type=float)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sweep = with_overrides(load_sweep(args.file), args.overrides)
    out = (args.out or sweep.out).absolute()
    runs = selected(sweep.runs, args.only)
    if args.dry_run:
        print_plan(sweep, runs, [run for run in runs if not RunDir(out / run.name).done.exists()])
        return
    try:
        run_dirs = prepare(sweep, runs, out, discard_changed=args.discard_changed)
    except ConfigChanged as changed:
        raise SystemExit(f"vlp sweep: {changed}") from None
    pending = [run_dir for run_dir in run_dirs if not run_dir.done.exists()]
    print(f"{len(run_dirs)} runs, {len(run_dirs) - len(pending)} finished -> {out}")
    if args.executor == "slurm":
        failures = run_with_submitit(slurm_executor(out, args), pending, resume=not args.restart)
    else:
        failures = run_locally(pending, args.parallel or 1, resume=not args.restart)
    if failures:
        raise SystemExit("failed runs:\n  " + "\n  ".join(failures))
    print(f"all runs finished; aggregate them with: vlp report {out}")


def with_overrides(sweep: Sweep, assignments: list[str]) -> Sweep:
    """The sweep with ``KEY=VALUE`` overrides added to every run (e.g. to move it to a GPU)."""
    overrides = dict(sweep.overrides)
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {assignment!r}")
        overrides[key] = yaml.safe_load(value)
    return dataclasses.replace(sweep, overrides=overrides)


def selected(runs: list[Run], patterns: list[str] | None) -> list[Run]:
    """The runs whose name matches one of the glob patterns (all of them without patterns)."""
    if not patterns:
        return runs
    chosen = [run for run in runs if any(fnmatch.fnmatchcase(run.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"no run matches {patterns}; runs: {[run.name for run in runs]}")
    return chosen


def print_plan(sweep: Sweep, runs: list[Run], pending: list[Run]) -> None:
    """The runs with what sets each apart, and whether each is finished."""
    print(f"base: {sweep.base}")
    for key, value in sweep.overrides.items():
        print(f"  {key}={value}")
    for run in runs:
        status = "todo" if run in pending else "done"
        point = "".join(f" {k}={v}" for k, v in (run.objectives.overrides | run.point).items())
        weights = "".join(f" {k}.weight={v}" for k, v in run.objectives.weights.items())
        print(f"[{status}] {run.name}: {run.objectives.path}{weights} seed={run.seed}{point}")


def run_locally(run_dirs: list[RunDir], parallel: int, resume: bool = True) -> list[str]:
    """Run ``parallel`` runs at a time in subprocesses, each on its own share of the devices."""
    slots: queue.Queue[dict[str, str]] = queue.Queue()
    for env in device_shares(parallel):
        slots.put(env)

    def one(run_dir: RunDir) -> None:
        env = slots.get()
        print(f"{run_dir.name}: running (logs in {run_dir.path})", flush=True)
        try:
            execute(run_dir, Path.cwd(), os.environ | env, resume)
        finally:
            slots.put(env)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {pool.submit(one, run_dir): run_dir for run_dir in run_dirs}
        return _collect((futures[done], done.result) for done in as_completed(futures))


def device_shares(parallel: int) -> list[dict[str, str]]:
    """Environment per concurrent slot: a split of the CPU threads, and of the visible GPUs.

    GPU runs get a thread share too: each would otherwise start one thread per core for
    its CPU work (evaluation, probes), and ``parallel`` of them would oversubscribe the
    cores.
    """
    if parallel <= 1:
        return [{}]
    import torch

    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    cpu_share = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    gpus = (
        os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if torch.cuda.is_available() else []
    )
    gpus = [g for g in gpus if g] or [str(i) for i in range(torch.cuda.device_count())]
    if gpus:
        return [
            cpu_share
            | {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i::parallel] or [gpus[i % len(gpus)]])}
            for i in range(parallel)
        ]
    return [cpu_share] * parallel


def slurm_executor(out: Path, args: argparse.Namespace) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=out / ".submitit", cluster="slurm")
    executor.update_parameters(
        name="vlp-sweep",
        timeout_min=args.time,
        gpus_per_node=args.gpus_per_run,
        cpus_per_task=args.cpus_per_run,
        mem_gb=args.mem_gb,
        slurm_partition=args.partition,
    )
    if args.parallel:
        executor.update_parameters(slurm_array_parallelism=args.parallel)
    return executor


def run_with_submitit(executor: Any, run_dirs: list[RunDir], resume: bool = True) -> list[str]:
    """Submit every run through a submitit executor (SLURM, or local in tests) and wait."""
    if not run_dirs:
        return []
    task = functools.partial(execute, cwd=Path.cwd(), resume=resume)
    jobs = list(zip(run_dirs, executor.map_array(task, run_dirs), strict=True))
    for run_dir, job in jobs:
        print(f"{run_dir.name}: job {job.job_id}")
    return _collect((run_dir, job.result) for run_dir, job in jobs)


def _collect(outcomes: Iterable[tuple[RunDir, Callable[[], Any]]]) -> list[str]:
    """Wait for each run's result as it comes; print each outcome; return the failures."""
    failures = []
    for run_dir, result in outcomes:
        try:
            result()
            print(f"{run_dir.name}: done")
        except Exception as error:
            failures.append(f"{run_dir.name}: {error}")
            print(f"{run_dir.name}: FAILED ({error})")
    return failures
