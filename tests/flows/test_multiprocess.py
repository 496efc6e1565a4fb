"""Two local processes train one model through JAX's distributed runtime (gloo on CPU).

Each process is ``python -m flows.train`` on 127.0.0.1 with a port chosen free at run
time; nothing leaves the loopback. The processes inherit the test run's persistent
compilation cache (tests/conftest.py), but only process 0 gains from it: JAX writes
cache entries from process 0 alone, and on the CPU the other process's programs have
cache keys of their own, so process 1 compiles in every run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from flows import configs, train

ROOT = Path(__file__).resolve().parents[2]
TEST = configs.get_config("test")
STEPS = 8
# The couplings form e^S here, as in the 8-device test of test_train.py, which also
# checks the gradient of the couplings on the action across devices.
SETTINGS = {
    "coupling_action": False,
    "num_train_steps": STEPS,
    "log_every_steps": 2,
    "checkpoint_every_steps": 2,
    "eval_every_steps": STEPS,
}
CONFIG = configs.override(TEST, [f"{k}={v}" for k, v in SETTINGS.items()])
TIMEOUT = 900  # seconds for one multi-process run, compile included


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir: Path, settings: dict, processes: int = 2, extra=()):
    """Start the processes of one run; each writes its output to workdir.p<i>.log."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    port = _free_port()
    sets = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
    procs = []
    for i in range(processes):
        cmd = [sys.executable, "-m", "flows.train", "--config", "test", "--workdir", str(workdir)]
        cmd += [*sets, "--coordinator", f"127.0.0.1:{port}"]
        cmd += ["--num-processes", str(processes), "--process-id", str(i)]
        cmd += list(extra[i]) if extra else []
        log = open(f"{workdir}.p{i}.log", "w")  # closed in _wait
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log))
    return procs


def _wait(procs, timeout: float = TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for proc, _ in procs:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return codes


def _log(workdir: Path, i: int) -> str:
    return Path(f"{workdir}.p{i}.log").read_text()


def _run(workdir: Path, settings: dict = SETTINGS) -> None:
    codes = _wait(_start(workdir, settings))
    assert codes == [0, 0], _log(workdir, 0)[-3000:] + _log(workdir, 1)[-3000:]


def _params(workdir: Path) -> list[np.ndarray]:
    model = train.load_model(workdir, CONFIG, (32, 32, 3), ema=False)
    return [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """The directory of one uninterrupted two-process run of the test preset."""
    root = tmp_path_factory.mktemp("multiprocess")
    _run(root / "straight")
    return root


def test_two_processes_match_one(two_process_run, tmp_path):
    root = two_process_run
    straight = root / "straight"
    one = train.train_and_evaluate(CONFIG, tmp_path / "one", progress=False)
    two_rows, one_rows = _rows(straight), _rows(tmp_path / "one")
    # metrics are written once, by the primary process, at the same steps
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows]
    for a, b in zip(two_rows, one_rows, strict=True):
        for key in ("train_bits_per_dim", "eval_bits_per_dim"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-6)
    assert one["step"] == STEPS
    # As in the 8-device test: Adamax's first updates are lr * g / |g|, so where a
    # gradient entry is near zero the all-reduce's summation order can move that
    # entry's update by up to lr; almost all entries agree to rounding.
    two_params, one_params = _params(straight), _params(tmp_path / "one")
    for a, b in zip(two_params, one_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-2 * TEST.learning_rate)
    flat_two = np.concatenate([p.ravel() for p in two_params])
    flat_one = np.concatenate([p.ravel() for p in one_params])
    assert np.mean(np.isclose(flat_two, flat_one, rtol=1e-5, atol=1e-7)) > 0.99
    # (m, s) statistics cover the whole global batch: 8 images x (16x16 + 8x8) pixels
    stats = [json.loads(line) for line in (straight / "expm_stats.jsonl").read_text().splitlines()]
    coupling = [r for r in stats if r["kind"] == "coupling"][-1]
    assert sum(coupling["order"].values()) == TEST.batch_size * (16 * 16 + 8 * 8)
    # only the primary process logs
    assert "eval bits/dim" in _log(straight, 0) and "eval bits/dim" not in _log(straight, 1)


def test_killed_processes_resume_bit_identically(two_process_run):
    root = two_process_run
    workdir = root / "killed"
    long = {**SETTINGS, "num_train_steps": 10_000, "eval_every_steps": 10_000}
    procs = _start(workdir, long)
    checkpoints = workdir / "checkpoints"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not any(p.parent.name.isdigit() for p in checkpoints.glob("*/_CHECKPOINT_METADATA")):
            assert time.monotonic() < deadline, "no checkpoint was written"
            assert all(p.poll() is None for p, _ in procs), _log(workdir, 0)[-3000:]
            time.sleep(0.1)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGKILL)
        _wait(procs)
    saved = sorted(
        int(p.parent.name)
        for p in checkpoints.glob("*/_CHECKPOINT_METADATA")
        if p.parent.name.isdigit()
    )
    assert saved and saved[-1] < STEPS, saved  # killed early enough to resume
    _run(workdir)  # the same command, to STEPS: resumes from the latest checkpoint
    assert "resumed from the checkpoint" in _log(workdir, 0)
    for a, b in zip(_params(workdir), _params(root / "straight"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_processes_with_different_configs_stop_with_a_clear_error(two_process_run):
    root = two_process_run
    workdir = root / "mismatch"
    extra = [(), ("--set", "seed=1")]
    codes = _wait(_start(workdir, SETTINGS, extra=extra), timeout=300)
    assert codes[0] != 0 and codes[1] != 0
    for i in (0, 1):
        assert "processes were given different configs" in _log(workdir, i)
    assert not workdir.exists()  # nothing written


def test_incomplete_distributed_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        train.main(["--config", "test", "--num-processes", "2", "--process-id", "0"])
    assert "--coordinator" in capsys.readouterr().err
