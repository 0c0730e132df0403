"""`vlp report` over a hand-written sweep folder: grouping, mean ± std, best marks, plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from vlp.report import collect, main

I2T, T2I, LOSS = "test/retrieval/i2t_r1", "test/retrieval/t2i_r1", "test/itm/loss"


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = sorted(set().union(*rows))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_run(
    root: Path,
    configuration: str,
    seed: int,
    index: int,
    test: dict[str, float],
    fit: dict[str, list[dict[str, float]]],
    done: bool = True,
) -> None:
    run = root / f"{configuration}_s{seed}"
    run.mkdir(parents=True)
    info = {"name": run.name, "index": index, "configuration": configuration, "seed": seed}
    (run / "run.json").write_text(json.dumps(info))
    write_csv(run / "test/metrics.csv", [{"epoch": 0, "step": 0, **test}])
    for attempt, rows in fit.items():
        write_csv(run / attempt / "metrics.csv", rows)
    if done:
        (run / "done").touch()


def losses(*values: float, start: int = 0) -> list[dict[str, float]]:
    return [{"step": start + i, "train/loss": v} for i, v in enumerate(values)]


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """tcl (2 seeds) listed before albef (3 seeds); one albef run resumed; an unfinished run."""
    speed = [{"step": 1, "train/samples_per_s": 100.0}, {"step": 3, "train/samples_per_s": 200.0}]
    write_run(tmp_path, "tcl", 0, 0, {I2T: 0.25, T2I: 0.1, LOSS: 1.0}, {"fit": losses(4, 3, 2, 1)})
    write_run(tmp_path, "albef", 0, 1, {I2T: 0.1, T2I: 0.3, LOSS: 0.5}, {"fit": losses(2, 2)})
    write_run(tmp_path, "tcl", 1, 2, {I2T: 0.35, T2I: 0.3, LOSS: 2.0}, {"fit": losses(6, 5, 4, 3)})
    params = [{"step": 0, "train/trainable_params": 2048.0}]
    write_run(
        tmp_path, "albef", 1, 3, {I2T: 0.2, T2I: 0.4, LOSS: 1.0}, {"fit": losses(4, 4) + params}
    )
    resumed = {"fit": losses(9, 9) + speed + params, "fit_resumed1": losses(3, start=1) + params}
    write_run(tmp_path, "albef", 2, 4, {I2T: 0.3, T2I: 0.5, LOSS: 1.5}, resumed)
    write_run(tmp_path, "tcl", 2, 5, {I2T: 0.9, T2I: 0.9, LOSS: 0.0}, {}, done=False)
    return tmp_path


def test_runs_are_grouped_over_seeds_in_sweep_order(sweep_dir: Path) -> None:
    tcl, albef = collect(sweep_dir)
    assert (tcl.name, tcl.seeds, albef.name, albef.seeds) == ("tcl", [0, 1], "albef", [0, 1, 2])
    assert tcl.values[I2T] == [0.25, 0.35]  # the unfinished tcl_s2 is left out
    # the resumed attempt replaces step 1 of the crashed one
    assert albef.mean_curve() == {0: (2 + 4 + 9) / 3, 1: (2 + 4 + 3) / 3}
    assert albef.values["train/samples_per_s"] == [150.0]


def test_report_csv_has_mean_and_sample_std_of_every_test_metric(sweep_dir: Path) -> None:
    main([str(sweep_dir)])
    with open(sweep_dir / "report.csv", newline="") as f:
        rows = {row["configuration"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["tcl", "albef"]
    assert rows["albef"]["seeds"] == "3" and rows["tcl"]["seeds"] == "2"
    assert float(rows["albef"][f"{I2T}_mean"]) == pytest.approx(0.2)
    assert float(rows["albef"][f"{I2T}_std"]) == pytest.approx(0.1)
    assert float(rows["tcl"][f"{I2T}_mean"]) == pytest.approx(0.3)
    assert float(rows["tcl"][f"{I2T}_std"]) == pytest.approx(math.sqrt(0.005))
    assert float(rows["albef"][f"{LOSS}_mean"]) == pytest.approx(1.0)
    assert float(rows["albef"]["train/samples_per_s_mean"]) == pytest.approx(150.0)
    assert rows["albef"]["train/samples_per_s_std"] == ""  # one run measured it
    assert rows["tcl"]["train/samples_per_s_mean"] == ""


def test_report_md_marks_the_best_mean_per_column(sweep_dir: Path) -> None:
    main([str(sweep_dir)])
    lines = (sweep_dir / "report.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == ["configuration", "seeds", "retrieval/i2t_r1", "retrieval/t2i_r1"]
    cells = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
        for line in lines[2:4]
    }
    column = {
        name: header.index(name) for name in ("retrieval/i2t_r1", "retrieval/t2i_r1", "itm/loss")
    }
    # recall in %: higher is better
    assert cells["tcl"][column["retrieval/i2t_r1"]] == "**30.0 ± 7.1**"
    assert cells["albef"][column["retrieval/i2t_r1"]] == "20.0 ± 10.0"
    assert cells["albef"][column["retrieval/t2i_r1"]] == "**40.0 ± 10.0**"
    # a loss: lower is better
    assert cells["albef"][column["itm/loss"]] == "**1 ± 0.5**"
    assert cells["tcl"][column["itm/loss"]] == "1.5 ± 0.707"


def test_trainable_parameters_are_a_training_column_without_a_best(sweep_dir: Path) -> None:
    main([str(sweep_dir)])
    lines = (sweep_dir / "report.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[-2:] == ["train/samples_per_s", "train/trainable_params"]
    albef = next(line for line in lines if line.startswith("| albef"))
    tcl = next(line for line in lines if line.startswith("| tcl"))
    # the same count for every seed, and albef_s2's resume logged it twice: no spread shown
    assert albef.strip("|").split("|")[-1].strip() == "2,048"
    assert tcl.strip("|").split("|")[-1].strip() == "–"


def test_rates_are_in_percent_and_quiet_data_counts_get_no_column(tmp_path: Path) -> None:
    ptuned = {
        "test/zeroshot/acc_hand": 0.25,
        "test/vqa/acc_4shot": 0.5,
        "test/caption/cider_4shot": 0.5,
        "test/data/skipped_corrupt": 0.0,
        "test/data/skipped_missing": 0.0,
    }
    write_run(tmp_path, "coop", 0, 0, ptuned, {})
    write_run(tmp_path, "coop_k4", 0, 1, {**ptuned, "test/data/skipped_missing": 3.0}, {})
    main([str(tmp_path)])
    header, _, coop, coop_k4 = (tmp_path / "report.md").read_text().splitlines()[:4]
    names = [cell.strip() for cell in header.strip("|").split("|")]
    assert "data/skipped_corrupt" not in names
    cells = dict(zip(names, (c.strip(" *") for c in coop.strip("|").split("|")), strict=True))
    assert cells["zeroshot/acc_hand"] == "25.0" and cells["vqa/acc_4shot"] == "50.0"
    assert cells["caption/cider_4shot"] == "0.5"
    assert cells["data/skipped_missing"] == "0"
    assert "| **3** |" in coop_k4


def test_report_draws_headline_bars_and_loss_curves(sweep_dir: Path) -> None:
    main([str(sweep_dir)])
    plots = sorted(p.name for p in (sweep_dir / "plots").iterdir())
    assert plots == ["retrieval_i2t_r1.png", "retrieval_t2i_r1.png", "train_loss.png"]
    for plot in plots:
        assert (sweep_dir / "plots" / plot).read_bytes()[:4] == b"\x89PNG"


def test_a_folder_without_finished_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no finished runs"):
        main([str(tmp_path)])


def write_code(run: Path, *versions: dict[str, str]) -> None:
    (run / "code.json").write_text(json.dumps([{"stage": "fit", **v} for v in versions]))


def test_report_names_the_code_its_runs_ran_and_warns_when_it_differs(sweep_dir: Path) -> None:
    main([str(sweep_dir)])
    assert "Code: not recorded" in (sweep_dir / "report.md").read_text()
    same = {"vlp": "0.1.0", "commit": "1a2b3c4d5e6f", "torch": "2.14.1"}
    for run in sweep_dir.glob("albef_s*"):
        write_code(run, same)
    main([str(sweep_dir)])
    assert "torch 2.14.1 (2 runs did not record theirs)." in (sweep_dir / "report.md").read_text()
    for run in sweep_dir.glob("tcl_s*"):
        write_code(run, same)
    main([str(sweep_dir)])
    report = (sweep_dir / "report.md").read_text()
    assert "Code: vlp 0.1.0 (1a2b3c4d5e6f), torch 2.14.1." in report
    assert "Warning" not in report
    write_code(sweep_dir / "albef_s2", same, same | {"commit": "0f0f0f0f0f0f-dirty"})
    main([str(sweep_dir)])
    report = (sweep_dir / "report.md").read_text()
    assert "the runs ran 2 code versions" in report
    assert "- vlp 0.1.0 (0f0f0f0f0f0f-dirty), torch 2.14.1" in report
    assert "Machine" not in report and "machines" not in report  # none recorded one


def test_report_names_the_machine_its_runs_ran_on_and_warns_when_it_differs(
    sweep_dir: Path,
) -> None:
    cpu = {"machine": "AMD EPYC (2 cores)", "vlp": "0.1.0", "torch": "2.14.1"}
    for run in sweep_dir.glob("*_s*"):
        write_code(run, cpu)
    main([str(sweep_dir)])
    report = (sweep_dir / "report.md").read_text()
    assert "Code: vlp 0.1.0, torch 2.14.1.\n\nMachine: AMD EPYC (2 cores).\n" in report
    gpu = cpu | {"machine": "AMD EPYC (16 cores), 1× NVIDIA H100 80GB HBM3"}
    write_code(sweep_dir / "tcl_s0", gpu)
    main([str(sweep_dir)])
    report = (sweep_dir / "report.md").read_text()
    assert "Code: vlp 0.1.0, torch 2.14.1." in report  # the machine is not a code version
    assert "**Warning: the runs ran on 2 machines**:" in report
    assert "- AMD EPYC (16 cores), 1× NVIDIA H100 80GB HBM3" in report
