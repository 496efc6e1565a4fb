"""benchmarks.isolation tells a finished, a failed, a slow and a deadlocked child apart."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

from benchmarks import glow_speed, isolation


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_finished_child_returns_its_json_and_wall_time():
    result = isolation.run_isolated(_python('print("noise"); print(\'{"x": 1}\')'), limit=60)
    assert result["x"] == 1 and 0 < result["wall_s"] < 60


def test_a_failing_child_is_reported_with_its_last_error_line():
    result = isolation.run_isolated(_python("raise SystemExit('bad spec')"), limit=60)
    assert result == {"error": "failed: bad spec"}


def test_a_busy_child_over_its_limit_is_slow_not_deadlocked():
    result = isolation.run_isolated(_python("while True: pass"), limit=3, idle_seconds=60)
    assert result == {"error": "did not finish in 3 s"}


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_child_without_cpu_time_is_reported_as_deadlocked():
    # Blocked on a lock that nobody releases: 0% CPU, like the jaxlib LAPACK deadlock.
    code = "import threading; lock = threading.Lock(); lock.acquire(); lock.acquire()"
    result = isolation.run_isolated(_python(code), limit=60, idle_seconds=3)
    assert result["error"].startswith(isolation.DEADLOCKED)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinned_children_run_on_one_core():
    code = 'import os, json; print(json.dumps({"cpus": len(os.sched_getaffinity(0))}))'
    assert isolation.run_isolated(_python(code), 60, pin_to_one_core=True)["cpus"] == 1
    free = isolation.run_isolated(_python(code), 60)["cpus"]
    assert free == len(os.sched_getaffinity(0))


def test_limits_cover_slow_compiles():
    assert isolation.limit_for([]) == 300
    assert isolation.limit_for([50.0, 120.0]) == 360
    assert isolation.limit_for([120.0], cap=200) == 200
    assert glow_speed.pinned("jax.scipy", "cpu") and not glow_speed.pinned("jax.scipy", "gpu")
    assert not glow_speed.pinned("opt15", "cpu")


def test_worker_times_a_step_and_sampling():
    spec = {
        "shape": dataclasses.asdict(glow_speed.TINY),
        "method": "opt15",
        "net": "small",
        "repeats": 2,
    }
    result = glow_speed.worker(spec)
    assert result["step_s"] > 0 and result["compile_s"] > 0
    assert "glibc_tunables" in result
    assert set(result["sample_s"]) == {"1", "2"}
    assert all(t > 0 for t in result["sample_s"].values())


def test_worker_failures_are_reported_not_raised():
    spec = {
        "shape": dataclasses.asdict(glow_speed.TINY),
        "method": "pade",
        "net": "small",
        "repeats": 1,
    }
    result = glow_speed.run_worker(spec, limit=120)
    assert result["error"].startswith("failed:") and "pade" in result["error"]


def test_a_child_gets_the_environment_it_is_given():
    code = 'import json, os; print(json.dumps({"x": os.environ.get("JEXPM_PROBE")}))'
    env = {**os.environ, "JEXPM_PROBE": "given"}
    assert isolation.run_isolated(_python(code), limit=60, env=env)["x"] == "given"
    assert isolation.run_isolated(_python(code), limit=60)["x"] is None


def test_glow_workers_get_huge_pages_unless_tunables_are_set(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert glow_speed.worker_env()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert glow_speed.worker_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert "GLIBC_TUNABLES" not in glow_speed.worker_env()
