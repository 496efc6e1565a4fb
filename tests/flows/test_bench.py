"""flows.bench's machinery (not its timings): workers, the matrix set, the README block."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flows import bench

TINY = bench.Shape("tiny", (8, 8, 3), 2, (1, 1), 4, (1, 2))


def test_worker_times_a_step_and_sampling():
    spec = {"shape": dataclasses.asdict(TINY), "method": "opt15", "net": "small", "repeats": 2}
    result = bench._worker(spec)
    assert result["step_s"] > 0 and result["compile_s"] > 0
    assert set(result["sample_s"]) == {"1", "2"}
    assert all(t > 0 for t in result["sample_s"].values())


def test_worker_failures_are_reported_not_raised():
    spec = {"shape": dataclasses.asdict(TINY), "method": "pade", "net": "small", "repeats": 1}
    result = bench._run_worker(spec, timeout=120)
    assert result["error"].startswith("failed:") and "pade" in result["error"]


def test_matrix_set_is_fixed_and_spans_the_orders():
    mats = bench.matrix_set()
    again = bench.matrix_set()
    assert len(mats) == 64
    assert all(np.array_equal(a, b) for a, b in zip(mats, again, strict=True))
    norms = sorted(float(np.abs(a).sum(axis=0).max()) for a in mats)
    assert norms[0] == pytest.approx(1e-3) and norms[-1] == pytest.approx(10**2.5)


def test_readme_block_is_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_START}\nold\n{bench.README_END}\nrest\n")
    bench._update_readme(readme, "new table")
    assert (
        readme.read_text() == f"intro\n{bench.README_START}\nnew table\n{bench.README_END}\nrest\n"
    )
    readme.write_text("no markers")
    with pytest.raises(ValueError, match=r"no <!-- flows\.bench"):
        bench._update_readme(readme, "x")
