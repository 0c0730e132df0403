"""``vlp report DIR --baseline NAME``: every configuration against one, seed for seed.

A mean ± std table leaves the reader to judge whether two rows differ. This section
states it: the difference of the means and the two-sided p-value of Welch's t-test
(unequal variances; Welch–Satterthwaite degrees of freedom):

    t = (x̄_a − x̄_b) / √(s_a²/n_a + s_b²/n_b)
    ν = (s_a²/n_a + s_b²/n_b)² / ( (s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1) )

With 3 seeds the test has little power: a large p says the seeds cannot tell, not that
two objectives are equal. No p is given below 2 seeds on either side, or when neither
side's seeds vary.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from vlp.report import Configuration, format_value


@dataclass(frozen=True)
class Difference:
    """One configuration's metric against the baseline's."""

    configuration: str
    metric: str
    difference: float  # mean − the baseline's mean
    p_value: float  # Welch's two-sided; NaN where the seeds cannot give one


def welch_p_value(values: list[float], baseline: list[float]) -> float:
    """Two-sided p of Welch's t-test; NaN with fewer than 2 values a side or no spread."""
    if len(values) < 2 or len(baseline) < 2:
        return math.nan
    a, b = (statistics.variance(x) / len(x) for x in (values, baseline))  # s²/n
    if a + b == 0:
        return math.nan
    t = (statistics.fmean(values) - statistics.fmean(baseline)) / math.sqrt(a + b)
    nu = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(baseline) - 1))
    return float(2 * stats.t.sf(abs(t), nu))


def signed(value: float, metric: str) -> str:
    """``+1.5`` or ``-1.5`` as the tables print ``metric``; no sign where it shows as zero."""
    shown = format_value(abs(value), metric)
    if float(shown.replace(",", "")) == 0:
        return shown
    return ("+" if value > 0 else "-") + shown


def differences(
    configurations: list[Configuration], baseline: str, metrics: list[str]
) -> list[Difference]:
    """Each other configuration's ``metrics`` against ``baseline``'s, where both have values."""
    by_name = {c.name: c for c in configurations}
    if baseline not in by_name:
        raise SystemExit(
            f"--baseline {baseline}: no finished runs of it; the configurations are "
            + ", ".join(by_name)
        )
    reference = by_name[baseline]
    return [
        Difference(
            c.name,
            metric,
            c.mean(metric) - reference.mean(metric),
            welch_p_value(c.values[metric], reference.values[metric]),
        )
        for c in configurations
        if c.name != baseline
        for metric in metrics
        if c.values.get(metric) and reference.values.get(metric)
    ]


def write_csv(path: Path, rows: list[Difference]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "metric", "difference", "p_value"])
        for row in rows:
            p = "" if math.isnan(row.p_value) else repr(row.p_value)
            writer.writerow([row.configuration, row.metric, repr(row.difference), p])


def markdown(rows: list[Difference], baseline: str) -> str:
    """A table of ``difference (p)`` cells, each in the units of the main table (percentage
    points for rates), with its columns in the order of ``rows``."""
    metrics = list(dict.fromkeys(r.metric for r in rows))
    names = list(dict.fromkeys(r.configuration for r in rows))
    cells = {(r.configuration, r.metric): r for r in rows}
    lines = [
        f"Against `{baseline}`: difference of the means (Welch's t-test, two-sided p).",
        "",
        "| configuration | " + " | ".join(m.removeprefix("test/") for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name in names:
        row = []
        for metric in metrics:
            cell = cells.get((name, metric))
            if cell is None:
                row.append("–")
                continue
            p = "" if math.isnan(cell.p_value) else f" (p {cell.p_value:.2g})"
            row.append(signed(cell.difference, metric) + p)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
