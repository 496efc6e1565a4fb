"""The soak benchmark on a handful of programs, so that it cannot rot.

``python -m benchmarks.soak --smoke`` compiles a few programs per contender, each
contender in its own process. The process must stay alive and jexpm's programs may add
no more than 1.5 times the memory maps jax.scipy's add (the bound of the compile-size
work: a long-lived process dies at ``vm.max_map_count``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import soak

ROOT = Path(__file__).resolve().parents[2]


def test_programs_are_distinct_and_cover_every_dtype():
    listed = soak.programs(16)
    assert len(set(listed)) == 16
    assert {dtype for _, dtype, _ in listed} == set(soak.DTYPES)
    assert {grad for *_, grad in listed} == {False, True}
    assert soak.programs(1) == [((2, 2), "float32", False)]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="memory maps need /proc")
def test_smoke_run_stays_alive_and_within_the_maps_bound(tmp_path):
    out = tmp_path / "soak.md"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.soak", "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out.read_text()
    assert "### 4 programs in one process" in report
    data = json.loads(out.with_suffix(".json").read_text())["soak"]
    assert set(data) == {"jexpm", "jax.scipy"}
    for contender, result in data.items():
        assert "error" not in result, (contender, result)
        assert result["programs"] == 4
        assert result["compile_cpu_s"] > 0 and result["maps_added"] > 0
    assert data["jexpm"]["maps_added"] <= 1.5 * data["jax.scipy"]["maps_added"]
