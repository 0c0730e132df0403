"""Aggregate ``runs/compare/<set>_s<seed>/test/metrics.csv`` into a Markdown table (mean ± std)."""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COLUMNS = {
    "i2t R@1": "test/retrieval/i2t_r1",
    "t2i R@1": "test/retrieval/t2i_r1",
    "ITM i2t R@1": "test/retrieval_itm/i2t_r1",
    "ITM t2i R@1": "test/retrieval_itm/t2i_r1",
    "comp. ITC": "test/compositional/itc_acc",
    "comp. ITM": "test/compositional/itm_acc",
    "zero-shot": "test/zeroshot/acc",
}


def last_values(metrics: Path) -> dict[str, float]:
    values: dict[str, float] = {}
    with open(metrics) as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def main(root: Path) -> None:
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for metrics in sorted(root.glob("*/test/metrics.csv")):
        name = metrics.parent.parent.name
        runs[name.rsplit("_s", 1)[0]].append(last_values(metrics))
    print("| objectives | seeds | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, seeds in runs.items():
        cells = []
        for key in COLUMNS.values():
            values = [100 * run[key] for run in seeds if key in run]
            if not values:
                cells.append("–")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1f}")
            else:
                cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
        print(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/compare"))
