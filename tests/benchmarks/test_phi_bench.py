"""The φ benchmark: its report is whole and its figures are in range."""

from __future__ import annotations

import json

from benchmarks import phi

#: Errors allowed against scipy's expm of W: 1024 units of roundoff times max(1, ‖A‖₁)
#: (the condition of e^A for these Gaussian matrices grows about like ‖A‖₁).
ULPS = 1024


def test_quick_report_has_its_sections(tmp_path):
    out = tmp_path / "phi.md"
    argv = ["--quick", "--dtypes", "float64", "--sizes", "4", "--ks", "2", "--repeats", "1"]
    phi.main([*argv, "--out", str(out)])
    text = out.read_text()
    for heading in (
        "Modified squaring's parameters",
        "Time and products, Gaussian matrices",
        "Compile time",
        "Accuracy on harder matrices",
        "Against mpmath (float64)",
    ):
        assert f"### {heading}" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert {"machine", "parameters", "speed", "compile", "hard", "mpmath"} <= set(data)
    speed = data["speed"]["rows"]
    assert [row["‖A‖₁"] for row in speed] == ["0.1", "30"]
    for row in speed:
        bound = ULPS * 2.0**-52 * max(1.0, float(row["‖A‖₁"]))
        assert float(row["squaring err (max j)"]) < bound
        assert float(row["aug err (max j)"]) < bound
        for column in ("aug ms", "squaring ms", "aug grad ms", "squaring grad ms"):
            assert float(row[column]) > 0
        # The block matrix runs (k+1)^3 times the flops per product: more in all.
        assert float(row["flop ratio"]) > 1
    assert all(float(row["aug compile s"]) > 0 for row in data["compile"]["rows"])
    for row in data["mpmath"]["rows"]:  # float64 against 50 digits: a few units of roundoff
        for column in ("aug err", "squaring err", "scipy-oracle err"):
            assert max(map(float, row[column].split())) < 1e-14
