"""`vlp report --baseline`: differences of means and Welch's p against closed forms.

Student's t with ν = 2 and ν = 4 degrees of freedom has closed-form tails:
    ν = 2:  p = 1 − |t| / √(2 + t²)
    ν = 4:  p = 1 − |t|(t² + 6) / (t² + 4)^{3/2}
Welch's ν is exactly 4 for two sets of 3 values with equal variances, and exactly 2 when
one of them does not vary, so the p-values below follow from the formulas by hand.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tests.test_report import I2T, T2I, losses, write_run
from vlp.report import main
from vlp.report_comparison import welch_p_value


def p_nu2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(2 + t * t)


def p_nu4(t: float) -> float:
    return 1 - abs(t) * (t * t + 6) / (t * t + 4) ** 1.5


def test_welch_p_with_equal_variances_has_four_degrees_of_freedom() -> None:
    a, b = [0.1, 0.2, 0.3], [0.3, 0.4, 0.5]
    t = (0.2 - 0.4) / math.sqrt(0.01 / 3 + 0.01 / 3)
    assert welch_p_value(a, b) == pytest.approx(p_nu4(t), rel=1e-9)


def test_welch_p_against_a_baseline_that_does_not_vary_has_two_degrees_of_freedom() -> None:
    t = (0.2 - 0.5) / math.sqrt(0.01 / 3)
    assert welch_p_value([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]) == pytest.approx(p_nu2(t), rel=1e-9)
    assert welch_p_value([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) == pytest.approx(p_nu2(t), rel=1e-9)


def test_no_p_value_without_two_seeds_a_side_or_without_spread() -> None:
    assert math.isnan(welch_p_value([0.1], [0.2, 0.3]))
    assert math.isnan(welch_p_value([0.1, 0.2], [0.3]))
    assert math.isnan(welch_p_value([0.2, 0.2], [0.3, 0.3]))


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """albef (3 seeds), tcl (3 seeds, equal spread), itc (1 seed), and data2vec without
    retrieval metrics."""
    for seed, (i2t, t2i) in enumerate([(0.3, 0.2), (0.4, 0.2), (0.5, 0.2)]):
        write_run(tmp_path, "albef", seed, seed, {I2T: i2t, T2I: t2i}, {"fit": losses(1)})
    for seed, (i2t, t2i) in enumerate([(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]):
        write_run(tmp_path, "tcl", seed, 3 + seed, {I2T: i2t, T2I: t2i}, {"fit": losses(1)})
    write_run(tmp_path, "itc", 0, 6, {I2T: 0.45, T2I: 0.25}, {"fit": losses(1)})
    write_run(tmp_path, "data2vec", 0, 7, {"test/linear_probe/acc": 0.5}, {"fit": losses(1)})
    return tmp_path


def test_report_compares_every_configuration_with_the_baseline(sweep_dir: Path) -> None:
    main([str(sweep_dir), "--baseline", "albef"])
    with open(sweep_dir / "comparison.csv", newline="") as f:
        rows = {(r["configuration"], r["metric"]): r for r in csv.DictReader(f)}
    assert set(rows) == {("tcl", I2T), ("tcl", T2I), ("itc", I2T), ("itc", T2I)}
    tcl_i2t = rows[("tcl", I2T)]
    assert float(tcl_i2t["difference"]) == pytest.approx(-0.2)
    assert float(tcl_i2t["p_value"]) == pytest.approx(p_nu4(-0.2 / math.sqrt(0.02 / 3)))
    # albef's t2i does not vary: ν = 2
    assert float(rows[("tcl", T2I)]["difference"]) == pytest.approx(0.0)
    assert float(rows[("tcl", T2I)]["p_value"]) == pytest.approx(1.0)
    # one itc seed: a difference without a p-value
    assert float(rows[("itc", I2T)]["difference"]) == pytest.approx(0.05)
    assert rows[("itc", I2T)]["p_value"] == ""

    report = (sweep_dir / "report.md").read_text()
    assert "Against `albef`: difference of the means (Welch's t-test, two-sided p)." in report
    lines = report[report.index("Against `albef`") :].splitlines()
    assert lines[2] == "| configuration | retrieval/i2t_r1 | retrieval/t2i_r1 |"
    p = p_nu4(-0.2 / math.sqrt(0.02 / 3))
    assert lines[4] == f"| tcl | -20.0 (p {p:.2g}) | 0.0 (p 1) |"
    assert lines[5] == "| itc | +5.0 | +5.0 |"
    assert len(lines) == 6  # data2vec shares no compared metric with albef


def test_an_unknown_baseline_is_an_error_naming_the_configurations(sweep_dir: Path) -> None:
    with pytest.raises(SystemExit, match=r"--baseline alef: .* albef, tcl, itc, data2vec"):
        main([str(sweep_dir), "--baseline", "alef"])
    assert not (sweep_dir / "report.md").exists()
