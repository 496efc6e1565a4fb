"""Many programs in one process: compile time and memory maps of a long-lived process.

``python -m benchmarks.soak [--programs N] [--smoke]`` compiles N distinct programs in
one process for each contender — ``jexpm.expm`` (its default, which checks on device
whether the input is upper triangular), ``jexpm.expm(upper_triangular=False)`` and
``jax.scipy.linalg.expm`` — and reports, per contender, the seconds spent compiling,
the memory maps the programs added to the process (``/proc/self/maps``; Linux's default
``vm.max_map_count`` is 65,530, and a process over it fails to allocate: XLA:CPU's LLVM
then reports "Cannot allocate memory"), its resident memory, whether it stayed alive,
and the maps left once ``jax.clear_caches()`` has dropped the compiled programs.
``--revision REV`` also measures ``jexpm.expm`` as git revision REV has it (its
``jexpm`` package exported into a temporary folder), to compare before and after.

The programs are ``jax.jit`` of the function and of ``jax.grad`` of the sum of its
real part, over sizes n = 2, 3, ... and the four inexact dtypes (float32, float64,
complex64, complex128), then a batch of 3 of each: long-lived processes such as
notebooks, sweeps and test suites compile such sets. Every contender runs in its own
process (:mod:`benchmarks.isolation`) on the same list, so the figures compare like
with like. ``--smoke`` compiles four programs of ``jexpm`` and ``jax.scipy`` (for the tests).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from . import isolation
from .harness import Section, default_output, finish, markdown_table

ROOT = Path(__file__).resolve().parents[1]

CONTENDERS = ("jexpm", "jexpm (upper_triangular=False)", "jax.scipy")
DTYPES = ("float32", "float64", "complex64", "complex128")
#: Seconds a contender may take (the full run compiles 320 programs on a 2-core CPU in
#: a few minutes).
LIMIT_SECONDS = 1800.0


def programs(count: int) -> list[tuple[tuple[int, ...], str, bool]]:
    """The first ``count`` (shape, dtype, grad) triples, in the order they compile."""
    out = []
    for batch in ((), (3,)):
        for n in range(2, 2 + count):
            for dtype in DTYPES:
                for grad in (False, True):
                    out.append(((*batch, n, n), dtype, grad))
                    if len(out) == count:
                        return out
    return out


def maps() -> int:
    """The number of memory maps of this process (0 where there is no ``/proc``)."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _cpu_seconds() -> float:
    """This process's user and system CPU seconds (steadier than wall time on a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _function(contender: str):
    import jax

    import jexpm

    if contender == "jexpm":
        return jexpm.expm
    if contender == "jexpm (upper_triangular=False)":
        return lambda a: jexpm.expm(a, upper_triangular=False)
    if contender == "jax.scipy":
        return jax.scipy.linalg.expm
    raise ValueError(f"unknown contender {contender!r}; choose from {CONTENDERS}")


def worker(contender: str, count: int) -> dict:
    """Compile ``count`` programs of ``contender`` in this process; return the figures."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    f = _function(contender)
    start_maps = maps()
    compile_s = compile_cpu_s = 0.0
    for shape, dtype, grad in programs(count):
        a = jnp.full(shape, 0.1, dtype)
        g = jax.grad(lambda a: jnp.sum(jnp.real(f(a)))) if grad else f
        t0, c0 = time.perf_counter(), _cpu_seconds()
        jax.jit(g).lower(a).compile()
        compile_s += time.perf_counter() - t0
        compile_cpu_s += _cpu_seconds() - c0
    grown = maps() - start_maps
    jax.clear_caches()
    return {
        "programs": count,
        "compile_s": compile_s,
        "compile_cpu_s": compile_cpu_s,
        "maps_added": grown,
        "maps_after_clear": maps() - start_maps,
        # ru_maxrss is in KiB on Linux.
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _measure(contender: str, count: int, tree: Path | None = None) -> dict:
    """:func:`worker` in a child process, its jexpm from ``tree`` (None: this checkout)."""
    if tree is None:
        cmd = [sys.executable, "-m", "benchmarks.soak", "--worker", contender, str(count)]
        return isolation.run_isolated(cmd, LIMIT_SECONDS)
    code = (
        "import json, sys; "
        f"sys.path[:0] = [{str(tree)!r}, {str(ROOT)!r}]; "
        "import jexpm; from benchmarks.soak import worker; "
        f"print(json.dumps(worker({contender!r}, {count}) | {{'jexpm': jexpm.__file__}}))"
    )
    result = isolation.run_isolated([sys.executable, "-c", code], LIMIT_SECONDS)
    if "error" not in result and Path(result["jexpm"]).parent != tree / "jexpm":
        result = {"error": f"measured {result['jexpm']}, not {tree / 'jexpm'}"}
    result.pop("jexpm", None)  # a path of this machine, checked above
    return result


def run(
    count: int, contenders: tuple[str, ...] = CONTENDERS, revision: str | None = None
) -> Section:
    """Every contender in its own process over the same ``count`` programs.

    With ``revision``, also ``jexpm.expm`` as that git revision has it.
    """
    results = {}
    if revision is not None:
        with tempfile.TemporaryDirectory() as tmp:
            isolation.export_revision(revision, Path(tmp), ("jexpm",))
            results[f"jexpm at {revision}"] = _measure("jexpm", count, Path(tmp))
    for contender in contenders:
        results[contender] = _measure(contender, count)
    base = results["jax.scipy"]

    def versus(r: dict, key: str) -> str | None:
        return f"{r[key] / base[key]:.2f}x" if base.get(key) else None

    rows = []
    for contender, r in results.items():
        if "error" in r:
            rows.append([contender, f"no: {r['error']}", *[None] * 7])
            continue
        rows.append(
            [
                contender,
                "yes",
                f"{r['compile_s']:.1f}",
                f"{r['compile_cpu_s']:.1f}",
                versus(r, "compile_cpu_s"),
                r["maps_added"],
                versus(r, "maps_added"),
                r["maps_after_clear"],
                f"{r['max_rss_mib']:.0f}",
            ]
        )
    headers = [
        "contender",
        "alive",
        "compile s (wall)",
        "compile s (CPU)",
        "vs jax.scipy",
        "maps added",
        "vs jax.scipy",
        "maps after clear_caches",
        "max RSS MiB",
    ]
    text = (
        f"### {count} programs in one process\n\n"
        "`jax.jit` of the function and of `jax.grad` of its summed real part, n = 2, 3, ..., "
        "four dtypes, unbatched then a batch of 3; compile time is `lower(...).compile()`, "
        "its CPU seconds the process's (steadier than wall time on a busy machine).\n\n"
        + markdown_table(headers, rows)
    )
    return Section(text, results)


def main(argv: list[str] | None = None) -> None:
    """Run the soak benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Many programs in one process.")
    parser.add_argument("--programs", type=int, default=320, help="programs per contender")
    parser.add_argument("--smoke", action="store_true", help="a handful of programs")
    parser.add_argument("--out", type=Path, default=None, help="the markdown report")
    parser.add_argument("--revision", default=None, help="also measure jexpm at this git revision")
    args = parser.parse_args(argv)
    if args.programs < 1:
        parser.error(f"--programs must be >= 1, got {args.programs}")
    count = 4 if args.smoke else args.programs
    start = time.perf_counter()
    out = args.out or default_output("soak", args.smoke)
    # The smoke run leaves out the upper_triangular=False row (for the tests' time).
    contenders = ("jexpm", "jax.scipy") if args.smoke else CONTENDERS
    sections = {"soak": run(count, contenders, args.revision)}
    finish(out, "benchmarks.soak", "benchmarks.soak", argv or sys.argv[1:], sections, start)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
