"""benchmarks.compile_time: its summaries and its command line (the measurements
themselves train a Glow step per row, too long for the suite)."""

from __future__ import annotations

import pytest

from benchmarks import compile_time


def test_summary_is_the_median_with_the_range_of_several_values():
    assert compile_time._summary([3.0], "{:.1f}") == "3.0"
    assert compile_time._summary([5.0, 1.0, 3.0], "{:.1f}") == "3.0 (1.0–5.0)"
    assert compile_time._summary([0.1, 0.3], "{:.0f}") == "0 (0–0)"


def test_bad_command_lines_fail_before_measuring(capsys):
    with pytest.raises(SystemExit):
        compile_time.main(["--rounds", "0"])
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown workload 'mnist'"):
        compile_time.main(["--workloads", "mnist"])


def test_rounds_measure_every_row_in_turn_and_report_medians(monkeypatch):
    """The schedule and the table, with the measurement itself replaced by a counter."""
    calls = []

    def measure(tree, spec, limit):
        calls.append((tree.name, spec["statistics"], spec["unroll"]))
        return {"init_s": 1.0, "compile_s": float(len(calls)), "step_s": 0.1}

    monkeypatch.setattr(compile_time, "_measure", measure)
    section = compile_time.run(["default"], [], repeats=2, limit=1.0, rounds=2)
    root = compile_time.ROOT.name
    one_round = [(root, True, False), (root, False, False), (root, False, True)]
    assert calls == one_round * 2  # the rows in turn, round after round
    assert "| default  | current + (m, s)  | 1.0 (1.0–1.0)" in section.markdown
    assert "2.5 (1.0–4.0)" in section.markdown  # compile s of the first row: calls 1 and 4
    assert [row["round"] for row in section.data] == [0, 0, 0, 1, 1, 1]
    calls.clear()
    compile_time.run(["default"], [], repeats=2, limit=1.0, variants=False)
    assert calls == [(root, False, False)]
