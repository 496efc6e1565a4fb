"""The one-command device run, on the CPU with tiny sizes, so that it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import device, glow_speed

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_writes_every_section(tmp_path):
    # A 60 s budget: the in-process sections run; no Glow worker (each needs minutes
    # on two cores, and is tested in test_isolation.py) starts with under 60 s left.
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.device", "--smoke", "--budget", "60"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "device-cpu-smoke.md").read_text()
    data = json.loads((tmp_path / "device-cpu-smoke.json").read_text())
    assert report.startswith("## jexpm on the device\n")
    assert "- backend: cpu" in report and "benchmarks.device --smoke" in report
    for heading in (
        "### expm, float32 (median ms per call)",
        "### expm, bfloat16 (jax.scipy in float32, rounded)",
        "### Gradients, float32",
        "### expm's paths, float32",
        "### Product forms inside expm, float32",
        "### Cache slicing of the forward pass, float32",
        "### Glow training and sampling",
        "#### tiny (8x8x3): training step, batch 4",
        "#### tiny (8x8x3): sampling latency",
        "### Time per section (budget 60 s)",
    ):
        assert heading in report, heading
    assert "failed:" not in report
    # The first sections always fit: real rows with times and errors.
    for dtype in ("float32", "bfloat16"):
        (row,) = data["expm"][dtype]
        assert row["workload"] == "(a) 16×4×4"
        assert float(row["opt15 ms"]) > 0 and float(row["jax.scipy ms"]) > 0
        assert float(row["err opt15"]) < (1e-5 if dtype == "float32" else 1e-2)
    # The gradients too run once the sections before them leave time: on two loaded
    # cores their share of a 60 s budget (6 s) can go to compiling expm's programs.
    if data["gradients"]:
        (grad,) = data["gradients"]
        assert float(grad["jexpm grad ms"]) > 0
    else:
        gradients = report.split("### Gradients, float32")[1].split("\n### ")[0]
        assert "Skipped for the time budget" in gradients
    # The paths section runs once the sections before it leave it time (a loaded
    # machine can use its share up first, as for slicing below).
    paths = data["paths"]
    if not paths:
        assert "Skipped for the time budget: (a) 16×4×4 ‖A‖₁=2" in report
    else:
        assert [row["kind"] for row in paths] == ["fwd", "grad", "jvp"]
    for row in paths:  # on the CPU: no command buffers, and jexpm is the XLA path
        assert float(row["jexpm ms"]) > 0 and float(row["floor ms"]) > 0
        assert row["xla+cb ms"] is None and row["jexpm round trips"] > 0
    slicing = data["slicing"]
    assert slicing["rows"] or slicing["skipped"] == ["64×4×4"]
    for row in slicing["rows"]:
        assert row["slices"] == 4 and row["used"] == "sliced"
    glow = data["glow"]["tiny (8x8x3)"]
    assert set(glow) == set(glow_speed.ROWS)
    assert all(r == {"error": "skipped: time budget"} for r in glow.values())
    assert set(data["budget"]["used_s"]) == set(device.SHARES)


def test_a_failing_section_is_reported_and_the_run_goes_on():
    def broken():
        raise ValueError("no such device\nmore")

    section = device.guarded("Broken", broken, None)
    assert section.markdown == "### Broken\n\nfailed: ValueError: no such device."
    assert section.data == {"error": "failed: ValueError: no such device"}


def test_a_section_past_its_deadline_is_stopped():
    import time

    def endless():
        while True:
            time.sleep(0.01)

    section = device.guarded("Slow", endless, time.perf_counter() - device.GRACE_SECONDS + 0.2)
    assert "stopped 30 s after its time budget ran out" in section.markdown


def test_a_partial_run_names_its_sections_and_glow_rows():
    args = device._parse_args(
        ["--out", "x", "--sections", "slicing, glow", "--glow-methods", "opt15,stand-in (I + A)"]
    )
    assert args.sections == ["slicing", "glow"]
    assert args.glow_methods == ["opt15", "stand-in (I + A)"]
    assert device._parse_args(["--out", "x"]).sections == list(device.SHARES)
    for bad in (["--sections", "expm,bogus"], ["--sections", ","], ["--glow-methods", "fast"]):
        with pytest.raises(SystemExit):
            device._parse_args(["--out", "x", *bad])
