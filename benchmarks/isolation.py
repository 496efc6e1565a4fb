"""One measurement per process: time limits, and a deadlock told from a slow method.

:func:`run_isolated` runs a command in a child process and watches it. A child that
exceeds its time limit is slow ("did not finish in N s"); a child that uses no CPU time
at all for :data:`IDLE_SECONDS` is stuck, not slow, and is reported as
:data:`DEADLOCKED`: the one such stall seen in these benchmarks is jaxlib 0.10.2's CPU
LAPACK kernels waiting on each other in XLA's intra-op thread pool
(``docs/known_issues.md``), which a process pinned to one core (``pin_to_one_core``)
does not hit. CPU time is read from ``/proc``; where there is none, only the time limit applies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

DEADLOCKED = "deadlocked (jaxlib LAPACK)"
#: A child with no CPU time for this long is reported as deadlocked.
IDLE_SECONDS = 30.0
#: Least time limit of a method, and its multiple of the slowest method so far: enough
#: for a compile 1.9x longer than the baseline's, and for the timed steps.
MIN_LIMIT_SECONDS = 300.0
LIMIT_FACTOR = 3.0
_POLL_SECONDS = 1.0


def limit_for(walls: Sequence[float], cap: float | None = None) -> float:
    """The time limit of the next method, given the wall times of those that finished.

    Args:
      walls: seconds each finished method took, compile included.
      cap: the most seconds any method may take (None: no cap).

    Returns:
      ``max(MIN_LIMIT_SECONDS, LIMIT_FACTOR * max(walls))``, at most ``cap``.
    """
    limit = max([MIN_LIMIT_SECONDS, *(LIMIT_FACTOR * w for w in walls)])
    return limit if cap is None else min(cap, limit)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, all its threads (None without ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of proc(5), utime and stime, counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pinned(cmd: Sequence[str]) -> list[str]:
    """``cmd`` behind this module's trampoline, which pins itself to one core and execs it.

    Pinning in the child itself, rather than in a ``preexec_fn``, keeps the parent from
    forking: the parent may hold JAX's threads, and a fork of a multithreaded process
    can deadlock.
    """
    cpu = min(os.sched_getaffinity(0))
    return [sys.executable, "-m", "benchmarks.isolation", "--pin", str(cpu), *cmd]


def run_isolated(
    cmd: Sequence[str],
    limit: float,
    *,
    pin_to_one_core: bool = False,
    idle_seconds: float = IDLE_SECONDS,
    env: Mapping[str, str] | None = None,
) -> dict:
    """Run ``cmd``, whose last line of output is a JSON object, and return that object.

    Args:
      cmd: the command.
      limit: seconds it may take.
      pin_to_one_core: run it on one CPU core only (``os.sched_setaffinity``, Linux;
        elsewhere this is ignored).
      idle_seconds: report it as deadlocked after this long with no CPU time.
      env: the child's environment (None: this process's).

    Returns:
      The child's JSON object with ``wall_s`` added, or ``{"error": why}``: "did not
      finish in N s", :data:`DEADLOCKED` with the seconds it had run, or "failed: " and
      the last line of its error output.
    """
    if pin_to_one_core and hasattr(os, "sched_setaffinity"):
        cmd = _pinned(cmd)
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
    )
    last_cpu, last_change = cpu_seconds(proc.pid), start
    while True:
        try:
            out, err = proc.communicate(timeout=_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            now = time.perf_counter()
            cpu = cpu_seconds(proc.pid)
            if cpu is None or last_cpu is None or cpu > last_cpu:
                last_cpu, last_change = cpu, now
            elif now - last_change >= idle_seconds:
                _stop(proc)
                return {"error": f"{DEADLOCKED}: no CPU time for {idle_seconds:.0f} s"}
            if now - start >= limit:
                _stop(proc)
                return {"error": f"did not finish in {limit:.0f} s"}
    if proc.returncode:
        last = (err.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed: {last[:200]}"}
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


ROOT = Path(__file__).resolve().parents[1]


def export_revision(
    revision: str, into: Path, packages: Sequence[str] = ("flows", "jexpm")
) -> None:
    """The ``packages`` of git ``revision`` of this checkout into the folder ``into``.

    A child process with ``into`` first on its ``sys.path`` then measures that revision
    beside the current tree.
    """
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, *packages],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate()


if __name__ == "__main__":
    # python -m benchmarks.isolation --pin CPU COMMAND...: COMMAND on core CPU only.
    if len(sys.argv) < 4 or sys.argv[1] != "--pin":
        sys.exit("usage: python -m benchmarks.isolation --pin CPU COMMAND...")
    os.sched_setaffinity(0, {int(sys.argv[2])})
    os.execv(sys.argv[3], sys.argv[3:])
