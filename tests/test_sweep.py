"""`vlp sweep`: expansion and naming, per-run configs, resume logic, and real runs."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vlp import sweep_run
from vlp.data_command import write_synthetic
from vlp.export import build_model
from vlp.sweep import (
    device_shares,
    main,
    parse_args,
    run_locally,
    run_with_submitit,
    slurm_executor,
)
from vlp.sweep_plan import ObjectiveSet, Run, expand, label, load_sweep
from vlp.sweep_run import (
    RunDir,
    execute,
    installed_vlp,
    prepare,
    reweight,
    sweep_configs,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "configs/sweeps"
TINY = SWEEPS / "objectives_tiny.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a small copy of the embedded data where configs expect it."""
    root = tmp_path_factory.mktemp("sweep")
    write_synthetic(root / "data/scenes", train=48, val=16, test=16)
    return root


def test_labels_are_short_and_path_safe() -> None:
    assert label(5e-4) == "5e-4"
    assert label(1e-5) == "1e-5"
    assert label(0.001) == "0.001"
    assert label(2.0) == "2"
    assert label(64) == "64"
    assert label("configs/objectives/tcl.yaml") == "tcl"
    assert label("a b:c") == "a-b-c"


def test_expansion_is_seed_major_with_readable_names() -> None:
    sets = [ObjectiveSet("itc", Path("itc.yaml")), ObjectiveSet("albef", Path("albef.yaml"))]
    runs = expand(sets, seeds=[0, 1], grid={"model.optimizer.init_args.lr": [5e-4, 1e-3]})
    assert [run.name for run in runs] == [
        "itc_lr5e-4_s0", "itc_lr0.001_s0", "albef_lr5e-4_s0", "albef_lr0.001_s0",
        "itc_lr5e-4_s1", "itc_lr0.001_s1", "albef_lr5e-4_s1", "albef_lr0.001_s1",
    ]  # fmt: skip
    assert runs[2].point == {"model.optimizer.init_args.lr": 5e-4}
    assert runs[2].configuration == runs[6].configuration == "albef_lr5e-4"


def test_runs_with_the_same_name_are_refused() -> None:
    same = [ObjectiveSet("itc", Path("a/itc.yaml")), ObjectiveSet("itc", Path("b/itc.yaml"))]
    with pytest.raises(ValueError, match="share names"):
        expand(same, seeds=[0], grid={})


def test_sweep_file_paths_are_relative_to_it_and_weights_name_the_set(tmp_path: Path) -> None:
    (tmp_path / "sets").mkdir()
    file = tmp_path / "sweeps" / "mine.yaml"
    file.parent.mkdir()
    file.write_text(
        "base: ../base.yaml\n"
        "objectives: [../sets/itc.yaml, {path: ../sets/albef.yaml, weights: {itm: 2.0}}]\n"
        "seeds: [3]\n"
        "overrides: {trainer.max_epochs: 2}\n"
    )
    sweep = load_sweep(file)
    assert sweep.base == tmp_path / "base.yaml"
    assert sweep.out == Path("runs/sweeps/mine")
    assert sweep.overrides == {"trainer.max_epochs": 2}
    assert [run.name for run in sweep.runs] == ["itc_s3", "albef_itm2_s3"]
    assert sweep.runs[1].objectives == ObjectiveSet(
        "albef_itm2", tmp_path / "sets/albef.yaml", {"itm": 2.0}
    )
    file.write_text("base: ../base.yaml\nobjectives: [a.yaml]\nseed: [1]\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_sweep(file)


#: objective sets compared in a sweep of their own: on Flamingo's data mixture, or staged
#: from a stage-1 checkpoint
OWN_SWEEP = {
    "flamingo.yaml": ["flamingo", "flamingo_data2vec", "flamingo_tcl"],
    "prompt_tuning.yaml": ["clip_coop"],
    "flamingo_ptuning.yaml": ["flamingo_ptuning", "flamingo_ptuning_deep"],
}


def test_shipped_sweeps_cover_every_objective_set_over_three_seeds() -> None:
    sweep = load_sweep(SWEEPS / "objectives.yaml")
    shipped = {path.stem for path in (ROOT / "configs/objectives").glob("*.yaml")}
    swept = {run.objectives.path.stem for run in sweep.runs}
    elsewhere = {name for names in OWN_SWEEP.values() for name in names}
    assert swept == shipped - elsewhere, "configs/sweeps/objectives.yaml must list every set"
    assert sorted({run.seed for run in sweep.runs}) == [0, 1, 2]
    assert len(sweep.runs) == 3 * len({run.configuration for run in sweep.runs})
    for file, names in OWN_SWEEP.items():
        runs = load_sweep(SWEEPS / file).runs
        assert sorted({run.objectives.path.stem for run in runs}) == names
        assert len({run.seed for run in runs}) == 3
    tiny = load_sweep(TINY)
    assert tiny.base == sweep.base and tiny.base.exists()
    assert all(run.objectives.path.exists() for run in tiny.runs)


def test_run_config_logs_checkpoints_and_reweights_inside_its_folder(tmp_path: Path) -> None:
    sweep = load_sweep(TINY)
    albef = ObjectiveSet("albef_itm2", ROOT / "configs/objectives/albef.yaml", {"itm": 2.0})
    [config] = sweep_configs(sweep, [Run("albef_itm2", 1, albef, {})], tmp_path)
    assert config["seed_everything"] == config["data"]["seed"] == 1
    # a common override, still an int (a float 3.0 would mean 300 % of the batches)
    assert type(config["trainer"]["limit_train_batches"]) is int
    assert config["trainer"]["logger"]["init_args"] == {
        "save_dir": str(tmp_path),
        "name": "albef_itm2_s1",
        "version": "fit",
    }
    callbacks = {c["class_path"]: c.get("init_args", {}) for c in config["trainer"]["callbacks"]}
    checkpoint = callbacks["lightning.pytorch.callbacks.ModelCheckpoint"]
    assert checkpoint["dirpath"] == str(tmp_path / "albef_itm2_s1/checkpoints")
    assert checkpoint["save_last"] == "link" and checkpoint["save_top_k"] == 1
    assert "vlp.throughput.Throughput" in callbacks
    weights = {
        o["class_path"].rsplit(".", 1)[-1]: o["init_args"]["weight"]
        for o in config["model"]["objectives"]
    }
    assert weights == {
        "MomentumContrastive": 1.0,
        "ImageTextMatching": 2.0,
        "MaskedLanguageModeling": 1.0,
    }


def test_an_objective_sets_own_overrides_reach_only_its_runs(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text(
        f"base: {TINY.parent / '../experiments/pretrain_tiny.yaml'}\n"
        "overrides: {trainer.max_steps: 3, data.batch_size: 8}\n"
        f"objectives: [{ROOT / 'configs/objectives/tcl.yaml'},\n"
        f"  {{path: {ROOT / 'configs/objectives/tcl.yaml'}, name: tcl_crop80,\n"
        "   overrides: {data.second_view.crop_scale: [0.8, 1.0], data.batch_size: 4}}]\n"
        "grid: {model.optimizer.init_args.lr: [0.001]}\n"
    )
    sweep = load_sweep(file)
    plain, cropped = sweep.runs
    assert (plain.name, cropped.name) == ("tcl_lr0.001_s0", "tcl_crop80_lr0.001_s0")
    assert sweep.overrides_of(cropped) == {
        "trainer.max_steps": 3,
        "data.batch_size": 4,  # the set's own value wins over the sweep's
        "data.second_view.crop_scale": [0.8, 1.0],
        "model.optimizer.init_args.lr": 0.001,
    }
    configs = sweep_configs(sweep, sweep.runs, tmp_path / "out")
    default_crop = configs[0]["data"]["second_view"]["crop_scale"]
    assert list(default_crop) == [0.5, 1.0] and configs[0]["data"]["batch_size"] == 8
    assert list(configs[1]["data"]["second_view"]["crop_scale"]) == [0.8, 1.0]
    assert configs[1]["data"]["batch_size"] == 4
    run_dir = prepare(sweep, [cropped], tmp_path / "out")[0]
    assert json.loads(run_dir.info.read_text())["overrides"] == sweep.overrides_of(cropped)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{path: a.yaml, overrides: {data.batch_size: 4}}", "needs a `name`"),
        ("{path: a.yaml, weight: {itm: 2}}", "expected a `path`"),
        ("{name: b}", "expected a `path`"),
    ],
)
def test_malformed_objective_sets_are_refused(tmp_path: Path, entry: str, message: str) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text(f"base: base.yaml\nobjectives: [{entry}]\n")
    with pytest.raises(ValueError, match=message) as refused:
        load_sweep(file)
    assert str(file) in str(refused.value)


def _run_config(out: Path, name: str, max_epochs: int, every_n_epochs: int = 1) -> dict:
    """A resolved config as ``sweep_configs`` writes it: logging and checkpoints under ``out``."""
    checkpoint = {"dirpath": str(out / name / "checkpoints"), "every_n_epochs": every_n_epochs}
    return {
        "trainer": {
            "max_epochs": max_epochs,
            "logger": {"init_args": {"save_dir": str(out), "name": name}},
            "callbacks": [
                {"class_path": sweep_run.CHECKPOINT, "init_args": checkpoint},
                {"class_path": sweep_run.THROUGHPUT},
            ],
        }
    }


def _prepare_with(monkeypatch, configs: list[dict], out: Path, **kwargs) -> list[RunDir]:
    """``prepare`` of the tiny sweep's first run, with ``configs`` as the resolved configs."""
    sweep = load_sweep(TINY)
    monkeypatch.setattr(sweep_run, "sweep_configs", lambda *_: configs)
    return prepare(sweep, sweep.runs[:1], out, **kwargs)


def test_an_unchanged_or_moved_run_keeps_its_results(tmp_path: Path, monkeypatch) -> None:
    name = load_sweep(TINY).runs[0].name
    old, new = tmp_path / "old", tmp_path / "moved"
    (run_dir,) = _prepare_with(monkeypatch, [_run_config(old, name, 1)], old)
    run_dir.done.touch()
    (same,) = _prepare_with(monkeypatch, [_run_config(old, name, 1)], old)
    assert same.done.exists()
    old.rename(new)
    (moved,) = _prepare_with(monkeypatch, [_run_config(new, name, 1)], new)
    assert moved.done.exists()
    assert yaml.safe_load(moved.config.read_text()) == _run_config(new, name, 1)


def test_a_started_run_whose_config_changed_is_refused_unless_discarded(
    tmp_path: Path, monkeypatch
) -> None:
    name = load_sweep(TINY).runs[0].name
    (run_dir,) = _prepare_with(monkeypatch, [_run_config(tmp_path, name, 1)], tmp_path)
    run_dir.done.touch()
    with pytest.raises(sweep_run.ConfigChanged, match=rf"{name}: trainer\.max_epochs\n"):
        _prepare_with(monkeypatch, [_run_config(tmp_path, name, 2)], tmp_path)
    assert run_dir.done.exists()
    assert yaml.safe_load(run_dir.config.read_text())["trainer"]["max_epochs"] == 1
    (changed,) = _prepare_with(
        monkeypatch, [_run_config(tmp_path, name, 2)], tmp_path, discard_changed=True
    )
    assert not changed.done.exists()
    assert yaml.safe_load(changed.config.read_text()) == _run_config(tmp_path, name, 2)
    assert changed.read_info()["configuration"] == "itc"


def test_a_run_not_started_takes_the_new_config(tmp_path: Path, monkeypatch) -> None:
    name = load_sweep(TINY).runs[0].name
    _prepare_with(monkeypatch, [_run_config(tmp_path, name, 1)], tmp_path)
    (run_dir,) = _prepare_with(monkeypatch, [_run_config(tmp_path, name, 2)], tmp_path)
    assert yaml.safe_load(run_dir.config.read_text())["trainer"]["max_epochs"] == 2


def test_config_changes_name_every_differing_leaf(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    before = _run_config(tmp_path, "run", 1) | {"model": {"objectives": [{"weight": 1.0}]}}
    run_dir.config.write_text(yaml.safe_dump(before))
    after = _run_config(tmp_path / "elsewhere", "run", 1, every_n_epochs=2) | {
        "model": {"objectives": [{"weight": 2.0}, {"weight": 1.0}]},
        "seed_everything": 3,
    }
    # where and how often checkpoints and logs are written is not part of the experiment
    changes = sweep_run.config_changes(run_dir, after)
    assert changes == ["model.objectives.0.weight", "model.objectives.1.weight", "seed_everything"]


def test_weights_for_an_objective_not_in_the_set_are_refused() -> None:
    objectives = [{"class_path": "vlp.objectives.contrastive.Contrastive", "init_args": {}}]
    with pytest.raises(ValueError, match=r"\['itm'\]"):
        reweight(objectives, {"itm": 2.0})


def test_unfinished_runs_resume_from_last_checkpoint_or_restart(
    tmp_path: Path, monkeypatch
) -> None:
    stages: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        sweep_run, "_stage", lambda run_dir, stage, args, cwd, env: stages.append((stage, args))
    )
    run = RunDir(tmp_path / "itc_s0")
    (run.path / "fit").mkdir(parents=True)
    run.checkpoint.parent.mkdir()
    run.checkpoint.touch()

    execute(run, tmp_path)
    (fit, fit_args), (test, test_args) = stages
    assert (fit, test) == ("fit", "test")
    assert fit_args[-3:] == [
        "--trainer.logger.init_args.version=fit_resumed1",
        "--ckpt_path",
        str(run.checkpoint),
    ]
    assert test_args[-2:] == ["--ckpt_path", str(run.checkpoint)]
    assert run.done.exists() and run.fitted.exists()

    stages.clear()
    run.done.unlink()
    execute(run, tmp_path)  # fit finished earlier: only the test stage is left
    assert [stage for stage, _ in stages] == ["test"]

    stages.clear()
    run.fitted.unlink()
    execute(run, tmp_path, resume=False)
    assert stages[0] == ("fit", ["--config", str(run.config)])
    assert not (run.path / "fit").exists() and not run.checkpoint.exists()


def test_every_stage_run_records_its_code_and_machine(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sweep_run.subprocess, "call", lambda *args, **kwargs: 0)
    monkeypatch.setattr(sweep_run, "code_version", lambda: {"vlp": "0.1.0", "commit": "abc"})
    monkeypatch.setattr(sweep_run, "machine", lambda: "CPU (2 cores)")
    run = RunDir(tmp_path / "itc_s0")
    run.path.mkdir()
    for stage in ("fit", "fit", "test"):  # killed once, resumed
        sweep_run._stage(run, stage, [], tmp_path, None)
    assert run.read_code() == [
        {"stage": stage, "machine": "CPU (2 cores)", "vlp": "0.1.0", "commit": "abc"}
        for stage in ("fit", "fit", "test")
    ]


def test_dry_run_lists_the_runs_and_what_is_finished(tmp_path: Path, capsys) -> None:
    (tmp_path / "albef_s1").mkdir()
    (tmp_path / "albef_s1/done").touch()
    main([str(TINY), "--out", str(tmp_path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("[")]
    assert len(runs) == 6
    assert f"[done] albef_s1: {ROOT / 'configs/objectives/albef.yaml'} seed=1" in runs
    assert f"[todo] itc_s0: {ROOT / 'configs/objectives/itc.yaml'} seed=0" in runs
    assert not (tmp_path / "itc_s0").exists()


def test_only_selects_runs_by_name_glob(tmp_path: Path, capsys) -> None:
    main([str(TINY), "--out", str(tmp_path), "--dry-run", "--only", "albef_*", "--only", "*_s0"])
    runs = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line[0] == "["]
    assert runs == ["[todo] itc_s0", "[todo] albef_s0", "[todo] tcl_s0", "[todo] albef_s1"]
    with pytest.raises(SystemExit, match="no run matches"):
        main([str(TINY), "--out", str(tmp_path), "--dry-run", "--only", "nothing*"])


def test_set_adds_overrides_to_every_run(tmp_path: Path, capsys) -> None:
    main([str(TINY), "--out", str(tmp_path), "--dry-run", "--set", "trainer.max_epochs=2",
          "--set", "trainer.precision=bf16-mixed"])  # fmt: skip
    plan = capsys.readouterr().out
    assert "  trainer.max_epochs=2\n" in plan and "  trainer.precision=bf16-mixed\n" in plan
    assert "trainer.limit_train_batches=3" in plan  # the file's own overrides stay
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main([str(TINY), "--out", str(tmp_path), "--dry-run", "--set", "trainer.max_epochs"])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def last(rows: list[dict[str, str]], name: str) -> float:
    return [float(r[name]) for r in rows if r.get(name)][-1]


@pytest.fixture(scope="module")
def two_runs(workdir: Path) -> Path:
    """The tiny sweep's two ITC runs (seeds 0 and 1), two at a time."""
    sweep = load_sweep(TINY)
    out = workdir / "runs/sweeps/objectives_tiny"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        runs = [run for run in sweep.runs if run.objectives.name == "itc"]
        failures = run_locally(prepare(sweep, runs, out), parallel=2)
    assert failures == []
    return out


def test_runs_fit_then_test_and_keep_config_and_metrics(two_runs: Path, capsys) -> None:
    for seed in (0, 1):
        run = RunDir(two_runs / f"itc_s{seed}")
        assert run.done.exists() and run.checkpoint.exists()
        assert yaml.safe_load(run.config.read_text())["seed_everything"] == seed
        fit = read_rows(run.path / "fit/metrics.csv")
        assert last(fit, "train/loss") > 0
        assert last(fit, "train/samples_per_s") > 0
        assert 0 <= last(read_rows(run.test_metrics), "test/retrieval/i2t_r1") <= 1
    main([str(TINY), "--out", str(two_runs), "--dry-run"])
    assert "[done] itc_s1" in capsys.readouterr().out


def test_report_over_real_runs_matches_their_metrics(two_runs: Path) -> None:
    from vlp.report import main as report

    report([str(two_runs)])
    tests = [read_rows(two_runs / f"itc_s{seed}/test/metrics.csv")[-1] for seed in (0, 1)]
    [row] = read_rows(two_runs / "report.csv")
    assert row["configuration"] == "itc" and row["seeds"] == "2"
    for metric in ("test/retrieval/i2t_r1", "test/retrieval/t2i_r5", "test/zeroshot/acc"):
        values = [float(t[metric]) for t in tests]
        assert float(row[f"{metric}_mean"]) == pytest.approx(sum(values) / 2)
        assert float(row[f"{metric}_std"]) == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    mean_i2t = 100 * statistics.fmean(float(t["test/retrieval/i2t_r1"]) for t in tests)
    table = (two_runs / "report.md").read_text()
    assert f"| itc | 2 | {mean_i2t:.1f} ± " in table
    for plot in ("retrieval_i2t_r1", "retrieval_t2i_r1", "zeroshot_acc", "train_loss"):
        assert (two_runs / f"plots/{plot}.png").read_bytes()[:4] == b"\x89PNG"


def test_submitit_local_executor_runs_the_remaining_stage(two_runs: Path, workdir: Path) -> None:
    """The job runs `execute` in another process: here the test stage of a fitted run."""
    import submitit

    run = RunDir(two_runs / "itc_s1")
    before = read_rows(run.test_metrics)
    run.done.unlink()
    executor = submitit.LocalExecutor(folder=workdir / "runs/.submitit")
    executor.update_parameters(timeout_min=10)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        assert run_with_submitit(executor, [run]) == []
    assert run.done.exists()
    assert read_rows(run.test_metrics) == before  # evaluation is deterministic


def test_slurm_options_reach_the_batch_script(tmp_path: Path, monkeypatch) -> None:
    srun = tmp_path / "bin/srun"  # submitit checks that it runs on a SLURM cluster
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    args = parse_args(
        ["s.yaml", "--executor=slurm", "--partition=gpu", "--time=30", "--gpus-per-run=2"]
    )
    script = slurm_executor(tmp_path, args)._executor._make_submission_file_text("cmd", "0")
    for line in ("--partition=gpu", "--time=30", "--gpus-per-node=2", "--cpus-per-task=8"):
        assert f"#SBATCH {line}\n" in script


def test_concurrent_runs_split_the_gpus_or_the_cpu_threads(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_shares(1) == [{}]
    assert device_shares(4) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    shares = [share["CUDA_VISIBLE_DEVICES"] for share in device_shares(2)]
    assert shares == ["4,6", "5"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in device_shares(4)] == ["4", "5", "6", "4"]
    assert {s["OMP_NUM_THREADS"] for s in device_shares(4)} == {"2"}


@pytest.mark.slow
def test_tiny_sweep_then_report_end_to_end(workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    out = workdir / "runs/tiny_full"
    main([str(TINY), "--out", str(out), "--parallel", "2"])
    from vlp.report import main as report

    report([str(out)])
    rows = {row["configuration"]: row for row in read_rows(out / "report.csv")}
    assert list(rows) == ["itc", "albef", "tcl"]
    for name, row in rows.items():
        values = [
            last(read_rows(out / f"{name}_s{seed}/test/metrics.csv"), "test/retrieval/t2i_r1")
            for seed in (0, 1)
        ]
        assert float(row["test/retrieval/t2i_r1_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["test/retrieval/t2i_r1_std"]) == pytest.approx(statistics.stdev(values))
    assert rows["itc"]["test/compositional/itm_acc_mean"] == ""
    assert (out / "plots/compositional_itm_acc.png").exists()
    assert (out / "plots/retrieval_itm_t2i_r1.png").exists()


@pytest.mark.parametrize("file", sorted(SWEEPS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_configuration_of_a_shipped_sweep_builds_its_model(file: Path, tmp_path) -> None:
    """An objective set that needs what its base lacks (e.g. ITM without ``model.fusion``)
    would otherwise fail only when the sweep reaches it, hours in."""
    sweep = load_sweep(file)
    one_per_configuration = list({run.configuration: run for run in sweep.runs}.values())
    for config in sweep_configs(sweep, one_per_configuration, tmp_path):
        assert build_model(config).objectives  # staged sweeps: built without init_from


def test_run_subprocesses_import_the_installed_vlp_not_a_vlp_folder_here(tmp_path: Path) -> None:
    # `python -m` would import tmp_path/vlp, as it would a checkout's vlp/ over a
    # non-editable install (whose vlp package holds objectives and datamodules too)
    (tmp_path / "vlp").mkdir()
    (tmp_path / "vlp/__init__.py").write_text("raise ImportError('the vlp folder here')\n")
    command = installed_vlp("vlp.cli:main")
    child = subprocess.run([*command, "fit", "--help"], cwd=tmp_path, capture_output=True)
    assert child.returncode == 0, child.stderr.decode()
    assert b"--model" in child.stdout
    shadowed = subprocess.run(
        [sys.executable, "-m", "vlp.cli", "fit", "--help"], cwd=tmp_path, capture_output=True
    )
    assert b"the vlp folder here" in shadowed.stderr


def test_a_runs_last_checkpoint_is_written_after_every_epoch(tmp_path: Path) -> None:
    """Lightning writes ``last.ckpt`` only beside a top-k checkpoint (or when fit ends): the
    sweep's settings must still leave one to resume from when a run is killed."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    class Killed(Exception):
        pass

    class KillInSecondEpoch(Callback):
        def on_train_epoch_start(self, trainer: Trainer, *_) -> None:
            if trainer.current_epoch == 1:
                raise Killed

    user_settings = {"class_path": sweep_run.CHECKPOINT, "init_args": {"save_top_k": 0}}
    checkpoint, _ = sweep_run.sweep_callbacks([user_settings], tmp_path)
    trainer = Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(**checkpoint["init_args"]), KillInSecondEpoch()],
    )  # fmt: skip
    with pytest.raises(Killed):
        trainer.fit(BoringModel())
    last = RunDir(tmp_path).checkpoint
    assert last.exists()
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_last_checkpoint_is_the_latest_epoch_when_the_user_monitors_a_metric(
    tmp_path: Path,
) -> None:
    """A monitored ModelCheckpoint saves only improvements, and Lightning's ``last.ckpt``
    beside it (a link or a copy) is the last improvement: test and resume need the latest."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    class Worsening(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/score", float(self.current_epoch))  # best (lowest) in epoch 0

    monitored = {"class_path": sweep_run.CHECKPOINT,
                 "init_args": {"monitor": "val/score", "mode": "min", "save_last": True}}  # fmt: skip
    callbacks = sweep_run.sweep_callbacks([monitored], tmp_path)
    checkpoints = [ModelCheckpoint(**c["init_args"]) for c in callbacks
                   if c["class_path"] == sweep_run.CHECKPOINT]  # fmt: skip
    trainer = Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=checkpoints,
    )  # fmt: skip
    trainer.fit(Worsening())
    assert torch.load(RunDir(tmp_path).checkpoint, weights_only=True)["global_step"] == 6
    assert torch.load(checkpoints[0].best_model_path, weights_only=True)["global_step"] == 2
