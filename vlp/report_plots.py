"""The sweep report's figures: a bar chart per headline metric and the training-loss curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

if TYPE_CHECKING:
    from vlp.report import Configuration


def plot_headlines(folder: Path, configurations: list[Configuration], metrics: list[str]) -> None:
    """``folder/<metric>.png`` per metric: mean over seeds per configuration, ± std error bars."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [c.name for c in configurations]
    for metric in metrics:
        means = [c.mean(metric) for c in configurations]
        errors = [0.0 if math.isnan(s := c.std(metric)) else s for c in configurations]
        figure = Figure(figsize=(max(4.0, 0.8 * len(names) + 1.5), 3.5), layout="constrained")
        axes = figure.subplots()
        axes.bar(names, means, yerr=errors, capsize=4, color="tab:blue")
        axes.set_title(metric)
        axes.set_ylabel("mean ± std over seeds")
        axes.tick_params(axis="x", labelrotation=30)
        figure.savefig(folder / f"{file_stem(metric)}.png", dpi=120)


def plot_train_loss(path: Path, configurations: list[Configuration]) -> None:
    """One curve per configuration: ``train/loss`` at each logged step, averaged over seeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.subplots()
    for configuration in configurations:
        curve = configuration.mean_curve()
        axes.plot(list(curve), list(curve.values()), label=configuration.name)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("train/loss (mean over seeds)")
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)


def file_stem(metric: str) -> str:
    """``test/retrieval/i2t_r1`` -> ``retrieval_i2t_r1``."""
    return metric.removeprefix("test/").replace("/", "_")
