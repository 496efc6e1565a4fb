"""The paper's Glow experiment in one process, on the CPU with the tiny shape, so it cannot rot.

The authors' PyTorch Glow is timed only where torch is installed and the environment
variable ``JEXPM_TORCH_GLOW`` names a checkout of their repository
(dafaronbi/fast-matrix-exponential); otherwise those tests are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import glow_speed, paper_gpu, torch_glow

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = os.environ.get("JEXPM_TORCH_GLOW")


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def test_smoke_run_writes_every_row(tmp_path):
    # A 1 s budget: the first row (opt15) always runs; every other row is skipped and says so.
    proc = _run("benchmarks.paper_gpu", "--smoke", "--budget", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "paper-cpu-smoke.md").read_text()
    data = json.loads((tmp_path / "paper-cpu-smoke.json").read_text())
    assert report.startswith("## The paper's Glow experiment\n")
    assert "- backend: cpu" in report and "benchmarks.paper_gpu --smoke" in report
    for heading in (
        "### Glow training and sampling, ours and theirs (small coupling networks",
        "#### tiny (8x8x3): training step, batch 4",
        "#### tiny (8x8x3): sampling latency (median)",
        "#### tiny (8x8x3): the two comparisons",
        "### Time (budget 1 s)",
    ):
        assert heading in report, heading
    assert "| compile / first call |" in report and "compile / first call (1 / 2)" in report
    assert "the paper's comparison" in report and "the fair one" in report
    assert "The authors' PyTorch Glow was not run: give `--torch-glow PATH`" in report
    assert "authors' PyTorch |" not in report
    ours = data["glow"]["ours"]["tiny (8x8x3)"]
    assert set(ours) == set(glow_speed.ROWS)
    first = ours["opt15"]
    assert first["step_s"] > 0 and first["compile_s"] > 0
    assert set(first["sample_s"]) == set(first["sample_compile_s"]) == {"1", "2"}
    for method, row in ours.items():
        if method != "opt15":
            assert row["error"].startswith("skipped: time budget"), (method, row)
            assert f"| {method} " in report
    step_table = report.split("training step, batch 4")[1].split("####")[0]
    assert "skipped: time budget" in step_table
    assert re.search(r"\| opt15 +\| [\d.]+ ms +\| ", step_table), step_table
    assert data["glow"]["theirs"] is None
    assert data["budget"]["budget_s"] == 1


def test_rows_run_both_comparisons_first():
    shapes = paper_gpu.workloads(smoke=False)
    assert [s.name for s in shapes] == [
        "CIFAR-10 (32x32x3)",
        "ImageNet 64x64",
        "ImageNet 64x64, batch 64",
    ]
    assert shapes[0].steps_per_level == (8, 4, 2) and shapes[0].train_batch == 64
    assert shapes[1].steps_per_level == (8, 4, 2, 2) and shapes[1].train_batch == 8
    assert shapes[1].sample_batches == (1, 16, 128) and shapes[2].sample_batches == ()
    order = paper_gpu.schedule(shapes, glow_speed.ROWS)
    assert len(order) == len(shapes) * len(glow_speed.ROWS)
    first = {m for _, m in order[: 3 * len(shapes)]}
    assert first == {"opt15", "baseline", glow_speed.STAND_IN}
    assert paper_gpu.schedule(shapes, ["ps"]) == [(s, "ps") for s in shapes]


def test_the_options_are_checked(tmp_path):
    args = paper_gpu._parse_args(["--out", "x", "--methods", "opt15, ps"])
    assert args.methods == ["opt15", "ps"] and args.net == "paper" and args.repeats == 5
    smoke = paper_gpu._parse_args(["--out", "x", "--smoke"])
    assert smoke.net == "small" and smoke.repeats == 1 and smoke.methods == list(glow_speed.ROWS)
    for bad in (["--methods", "fast"], ["--budget", "0"], ["--torch-glow", str(tmp_path)]):
        with pytest.raises(SystemExit):
            paper_gpu._parse_args(["--out", "x", *bad])


def test_out_of_memory_is_told_from_other_failures():
    oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB.")
    assert glow_speed.describe_error(oom) == "out of memory"
    assert glow_speed.describe_error(RuntimeError("CUDA out of memory. Tried")) == "out of memory"
    assert glow_speed.describe_error(ValueError("bad\nmore")) == "failed: ValueError: bad"


def test_the_combined_table_labels_both_comparisons():
    shape = glow_speed.TINY
    ours = {shape.name: {m: {"error": "not run"} for m in glow_speed.ROWS}}
    for method, step in (("opt15", 0.010), ("baseline", 0.015), (glow_speed.STAND_IN, 0.008)):
        ours[shape.name][method] = {
            "compile_s": 20.0,
            "step_s": step,
            "sample_compile_s": {"1": 3.0, "2": 3.5},
            "sample_s": {"1": step / 2, "2": step},
        }
    their_row = {"first_call_s": 1.0, "sample_first_s": {"1": 0.1}, "sample_s": {"1": 0.02}}
    theirs = {
        "torch": "2.13.0",
        "device": "cuda (NVIDIA H100)",
        "wall_s": 30.0,
        "rows": {
            shape.name: {
                "old": their_row | {"step_s": 0.080},
                "new": {**their_row, "step_s": 0.040, "sample_errors": {"2": "out of memory"}},
            }
        },
    }
    section = paper_gpu.report([shape], ours, theirs)
    text = section.markdown
    assert "| authors' PyTorch | old (Xiao–Liu loop) | 80 ms" in text
    assert "| jexpm (JAX)      | opt15               | 10 ms         | 1.50x" in text
    assert "| 20%        |" in text  # opt15's expm share: 1 - 8 / 10
    assert "out of memory" in text and "3.0 / 3.5 s" in text
    ratios = {r["ratio"]: r for r in section.data["ratios"][shape.name]}
    assert ratios["their old (Xiao–Liu loop) / their new"]["training step"] == "2.00x"
    assert ratios["our jitted baseline / our opt15"]["training step"] == "1.50x"
    assert ratios["their new / our opt15"]["training step"] == "4.00x"
    assert ratios["eager Xiao–Liu loop / our opt15"]["training step"] is None
    assert ratios["their new / our opt15"]["comparison"] == "the fair one"
    assert "torch 2.13.0 on cuda (NVIDIA H100)" in text


def test_their_loss_is_the_gaussian_negative_log_likelihood():
    np = pytest.importorskip("numpy")
    z = np.zeros((2, 3, 2, 2))
    log_det = np.array([1.0, 3.0])
    d = 12
    expected = -(-0.5 * d * np.log(2 * np.pi) + 2.0 - np.log(2.0**8 / 2.0) * d)
    assert torch_glow.nll(z, log_det) == pytest.approx(expected)


def test_loading_their_code_refuses_a_clashing_module(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        torch_glow.load(tmp_path)
    (tmp_path / "nets.py").write_text("")
    import flows  # this project's package, whose name their module shares

    monkeypatch.setitem(sys.modules, "flows", flows)
    with pytest.raises(RuntimeError, match="'flows'"):
        torch_glow.load(tmp_path)


needs_their_code = pytest.mark.skipif(
    CHECKOUT is None or not torch_glow.available(),
    reason="needs torch and JEXPM_TORCH_GLOW=<checkout of dafaronbi/fast-matrix-exponential>",
)


@needs_their_code
def test_their_glow_times_a_step_and_sampling():
    spec = {
        "shapes": [dataclasses.asdict(glow_speed.TINY)],
        "expms": list(torch_glow.EXPMS),
        "net": "small",
        "repeats": 2,
        "seconds": 120,
        "min_row": 1,
    }
    proc = _run("benchmarks.torch_glow", "--checkout", str(CHECKOUT), "--spec", json.dumps(spec))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"].startswith(("cpu", "cuda"))
    rows = result["rows"]["tiny (8x8x3)"]
    for expm in torch_glow.EXPMS:
        row = rows[expm]
        assert row["step_s"] > 0 and row["first_call_s"] > 0, row
        assert set(row["sample_s"]) == {"1", "2"} and all(t > 0 for t in row["sample_s"].values())
