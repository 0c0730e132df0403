"""``vlp report DIR``: a sweep's runs grouped over seeds into a table and plots.

    vlp report runs/sweeps/objectives

writes ``DIR/report.csv`` (mean and std over seeds of every test metric, of the training
throughput and of the trainable parameter count, one row per configuration),
``DIR/report.md`` (the same as a Markdown table, recall and accuracy in %, the best mean per
column in bold) and ``DIR/plots/``: a bar chart
with error bars per headline metric and ``train_loss.png``, each configuration's training-loss
curve averaged over seeds. ``--baseline NAME`` adds every configuration's difference from
``NAME`` with Welch's p-value (``vlp.report_comparison``).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from vlp.provenance import describe
from vlp.sweep_run import RunDir
from vlp.throughput import METRIC as THROUGHPUT

#: plotted, and listed first in the table, in this order (patterns over the logged names)
HEADLINE = (
    "test/retrieval/i2t_r1",
    "test/retrieval/t2i_r1",
    "test/retrieval_itm/*_r1",
    "test/compositional/itc_acc",
    "test/compositional/itm_acc",
    "test/zeroshot/acc",
    "test/linear_probe/*acc",
    "test/caption/*",
    "test/vqa/*",
    "test/video_retrieval/*_r1",
    "test/video_caption/cider",
)
TRAIN_LOSS = "train/loss"
#: logged once per fit by the module: what prompt-only training leaves trainable
TRAINABLE = "train/trainable_params"
#: training columns after the test metrics; only throughput has a "best"
TRAINING_COLUMNS = (THROUGHPUT, TRAINABLE)


@dataclass
class Configuration:
    """The runs of one configuration (one per seed) and their final metrics."""

    name: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    curves: list[dict[int, float]] = field(default_factory=list)  # train/loss by step, per seed
    code: list[dict[str, str]] = field(default_factory=list)  # each stage's code, every run
    unrecorded: int = 0  # runs made before sweeps recorded their code

    def mean(self, metric: str) -> float:
        values = self.values.get(metric, [])
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds; NaN with a single seed."""
        values = self.values.get(metric, [])
        return statistics.stdev(values) if len(values) > 1 else math.nan

    def mean_curve(self) -> dict[int, float]:
        steps = sorted(set().union(*self.curves)) if self.curves else []
        return {s: statistics.fmean(c[s] for c in self.curves if s in c) for s in steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlp report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="the sweep's output folder")
    parser.add_argument(
        "--baseline",
        metavar="NAME",
        help="also compare every configuration with this one (comparison.csv, a table in "
        "report.md): difference of the means and Welch's t-test over seeds",
    )
    args = parser.parse_args(argv)
    configurations = collect(args.dir)
    if not configurations:
        raise SystemExit(f"{args.dir}: no finished runs (folders with a `done` marker)")
    columns = metric_columns(configurations)
    report = markdown(configurations, columns)
    if args.baseline:
        from vlp import report_comparison

        compared = [c for c in columns if is_headline(c) or c == THROUGHPUT]
        rows = report_comparison.differences(configurations, args.baseline, compared)
        report_comparison.write_csv(args.dir / "comparison.csv", rows)
        report += "\n" + report_comparison.markdown(rows, args.baseline)
    write_csv(args.dir / "report.csv", configurations, columns)
    (args.dir / "report.md").write_text(report)
    from vlp.report_plots import plot_headlines, plot_train_loss

    plots = args.dir / "plots"
    plot_headlines(plots, configurations, [c for c in columns if is_headline(c)])
    plot_train_loss(plots / "train_loss.png", configurations)
    print((args.dir / "report.md").read_text())


def collect(root: Path) -> list[Configuration]:
    """The finished runs under ``root`` grouped by configuration, in sweep order."""
    runs = sorted(
        (RunDir(path.parent) for path in root.glob("*/done")),
        key=lambda run: run.read_info().get("index", 0),
    )
    configurations: dict[str, Configuration] = {}
    for run in runs:
        info = run.read_info()
        configuration = configurations.setdefault(
            info["configuration"], Configuration(info["configuration"])
        )
        configuration.seeds.append(info["seed"])
        code = run.read_code()
        configuration.code.extend(code)
        configuration.unrecorded += not code
        for metric, value in last_values(run.test_metrics).items():
            if metric.startswith("test/"):
                configuration.values[metric].append(value)
        training = [read_rows(attempt / "metrics.csv") for attempt in run.fit_attempts()]
        if throughput := logged(training, THROUGHPUT):
            configuration.values[THROUGHPUT].append(statistics.fmean(throughput))
        if trainable := logged(training, TRAINABLE):
            configuration.values[TRAINABLE].append(trainable[-1])
        # a resumed attempt re-logs the steps after its checkpoint: later attempts win
        configuration.curves.append(
            {
                int(r["step"]): float(r[TRAIN_LOSS])
                for rows in training
                for r in rows
                if r.get(TRAIN_LOSS)
            }
        )
    return list(configurations.values())


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def logged(attempts: list[list[dict[str, str]]], metric: str) -> list[float]:
    """Every value of ``metric`` over a run's fit attempts, in the order they were logged."""
    return [float(r[metric]) for rows in attempts for r in rows if r.get(metric)]


def last_values(path: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger metrics file."""
    values: dict[str, float] = {}
    for row in read_rows(path):
        values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def is_headline(metric: str) -> bool:
    return any(fnmatch.fnmatch(metric, pattern) for pattern in HEADLINE)


def metric_columns(configurations: list[Configuration]) -> list[str]:
    """Headline metrics in their order, the other test metrics, then the training columns."""
    present = set().union(*(c.values for c in configurations))
    headline = [m for p in HEADLINE for m in sorted(fnmatch.filter(present, p))]
    rest = sorted(
        (m for m in present - set(headline) if m.startswith("test/") and _shown(m, configurations)),
        key=_natural,
    )
    return headline + rest + [m for m in TRAINING_COLUMNS if m in present]


def _shown(metric: str, configurations: list[Configuration]) -> bool:
    """Counts of skipped bad data get a column only when some run skipped something."""
    if not metric.startswith("test/data/"):
        return True
    return any(value for c in configurations for value in c.values.get(metric, []))


def _natural(name: str) -> list[str | int]:
    """Sort key putting ``r5`` before ``r10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "perplexity" in metric


def is_rate(metric: str) -> bool:
    """Recall and accuracy (``i2t_r1``, ``itc_acc``, ``acc_hand``, ``acc_4shot``), shown in %."""
    return re.search(r"(^|_)(r\d+|acc)(_|$)", metric.rsplit("/", 1)[-1]) is not None


def best(configurations: list[Configuration], metric: str) -> float:
    """The best mean of a column; NaN (nothing marked) for the parameter count."""
    if metric == TRAINABLE:
        return math.nan
    means = [m for c in configurations if not math.isnan(m := c.mean(metric))]
    if not means:
        return math.nan
    return min(means) if lower_is_better(metric) else max(means)


def write_csv(path: Path, configurations: list[Configuration], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["configuration", "seeds", *(f"{m}_{s}" for m in columns for s in ("mean", "std"))]
        )
        for c in configurations:
            cells = [_number(v) for m in columns for v in (c.mean(m), c.std(m))]
            writer.writerow([c.name, len(c.seeds), *cells])


def markdown(configurations: list[Configuration], columns: list[str]) -> str:
    headers = [m.removeprefix("test/") for m in columns]
    lines = [
        "| configuration | seeds | " + " | ".join(headers) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    bests = {m: best(configurations, m) for m in columns}
    for c in configurations:
        cells = []
        for metric in columns:
            cell = _cell(c.mean(metric), c.std(metric), metric)
            is_best = len(configurations) > 1 and c.mean(metric) == bests[metric]
            cells.append(f"**{cell}**" if is_best else cell)
        lines.append(f"| {c.name} | {len(c.seeds)} | " + " | ".join(cells) + " |")
    note = "Mean ± sample std over seeds; recall and accuracy in %; best mean per column in bold."
    provenance = "\n\n".join(
        filter(None, [code_note(configurations), machine_note(configurations)])
    )
    return "\n".join(lines) + f"\n\n{note}\n\n{provenance}\n"


def code_note(configurations: list[Configuration]) -> str:
    """Which code the runs' stages ran: one version, or a warning listing them all."""
    stages = [c for configuration in configurations for c in configuration.code]
    versions = sorted(
        {describe({k: v for k, v in c.items() if k not in ("stage", "machine")}) for c in stages}
    )
    unrecorded = sum(c.unrecorded for c in configurations)
    missing = f" ({unrecorded} runs did not record theirs)" if unrecorded else ""
    if not versions:
        return "Code: not recorded (runs made before sweeps wrote `code.json`)."
    if len(versions) == 1:
        return f"Code: {versions[0]}{missing}."
    listed = "".join(f"\n- {v}" for v in versions)
    return f"**Warning: the runs ran {len(versions)} code versions**{missing}:{listed}"


def machine_note(configurations: list[Configuration]) -> str:
    """Which machine the runs' stages ran on: one, or a warning listing them all; nothing
    when no run recorded it (runs made before sweeps did)."""
    machines = sorted(
        {c["machine"] for configuration in configurations for c in configuration.code
         if "machine" in c}
    )  # fmt: skip
    if len(machines) <= 1:
        return "".join(f"Machine: {m}." for m in machines)
    listed = "".join(f"\n- {m}" for m in machines)
    return f"**Warning: the runs ran on {len(machines)} machines**:{listed}"


def format_value(value: float, metric: str) -> str:
    """A mean, spread or difference as the tables print it: rates in %."""
    if metric == TRAINABLE:
        return f"{value:,.0f}"
    return f"{100 * value:.1f}" if is_rate(metric) else f"{value:.3g}"


def _cell(mean: float, std: float, metric: str) -> str:
    if math.isnan(mean):
        return "–"
    no_spread = math.isnan(std) or (metric == TRAINABLE and std == 0)
    shown = format_value(mean, metric)
    return shown if no_spread else f"{shown} ± {format_value(std, metric)}"


def _number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)
