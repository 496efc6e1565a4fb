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
