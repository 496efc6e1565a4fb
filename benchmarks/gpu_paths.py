"""expm's paths on one backend: the fused kernels, the XLA path, its command buffers.

For each (workload, 1-norm) in float32, and each of the forward pass, ``jax.grad`` and
``jax.jvp``, the median time of

* ``jexpm``: what ``jexpm.expm`` runs (on a CUDA GPU, the fused kernels of
  ``jexpm/_kernel.py`` where they cover the size; elsewhere the XLA path);
* ``xla``: the XLA path (the private ``fused=False``);
* ``xla+cb``: the XLA path compiled with CUDA-graph command buffers that include
  conditionals and loops (``xla_gpu_enable_command_buffer``; GPUs only);
* ``jax.scipy``: ``jax.scipy.linalg.expm``;

beside the floor (the input and output bytes at the rate of a jitted copy of the same
array, timed in the same run), each path's ratio to it, and the host round trips of
each program: the data-dependent ``case`` and ``while`` ops of its lowered module
(XLA:GPU runs each with a host round trip; ops inside a kernel are not counted) and,
on a GPU, the device-to-host copies per call that ``jax.profiler`` records
(:func:`host_copies`), which count the round trips the program really makes.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jexpm
from jexpm import _expm

from . import harness
from .expm_speed import Workload

#: (workload key, 1-norm) of a full run.
CASES = tuple((key, norm) for key in "abcd" for norm in (0.5, 2.0, 30.0))
DTYPE = "float32"
#: Command buffers with conditionals and loops (XLA's DebugOptions, as a compile option).
COMMAND_BUFFERS: dict[str, str | bool] = {
    "xla_gpu_enable_command_buffer": "FUSION,CUBLAS,CUSTOM_CALL,CONDITIONAL,WHILE"
}


def xla_expm(a: jax.Array) -> jax.Array:
    """``jexpm.expm`` on the XLA path everywhere (the private ``fused=False``)."""
    return _expm._expm(
        a,
        upper_triangular=None,
        max_squarings=None,
        tol=None,
        method="opt15",
        return_info=False,
        fused=False,
    )


#: path -> (expm, compile options).
PATHS: dict[str, tuple[Callable[[jax.Array], jax.Array], dict[str, str | bool]]] = {
    "jexpm": (jexpm.expm, {}),
    "xla": (xla_expm, {}),
    "xla+cb": (xla_expm, COMMAND_BUFFERS),
    "jax.scipy": (jax.scipy.linalg.expm, {}),
}
KINDS: dict[str, Callable[[Callable], Callable]] = {
    "fwd": lambda expm: lambda a, g: expm(a),
    "grad": lambda expm: jax.grad(lambda a, g: jnp.sum(expm(a) * g)),
    "jvp": lambda expm: lambda a, g: jax.jvp(expm, (a,), (g,))[1],
}
HEADERS = [
    "workload",
    "‖A‖₁",
    "kind",
    "floor ms",
    *(f"{p} ms" for p in PATHS),
    *(f"{p}/floor" for p in PATHS),
    *(f"{p} round trips" for p in PATHS),
    *(f"{p} D2H/call" for p in PATHS),
]
#: The name XLA's CUPTI collector gives a device-to-host copy in a profile
#: (openxla/xla, ``xla/backends/profiler/gpu/cupti_tracer.cc``).
D2H_EVENT = "MemcpyD2H"

_CONSTANT = re.compile(r"^\s*(%[\w#]+)(?::\d+)? = stablehlo\.constant")
_CASE = re.compile(r"^\s*(%[\w#]+)(?::\d+)? = \"stablehlo\.case\"\((%[\w#]+)\)")


def round_trips(text: str) -> tuple[int, int]:
    """(data-dependent ``case`` ops, ``while`` ops) of a StableHLO module's text.

    A case on a constant index (or on the result of such a case) is
    ``lax.platform_dependent``'s choice, resolved when XLA compiles.
    """
    static: set[str] = set()
    cases = 0
    for line in text.splitlines():
        if line.lstrip().startswith("func.func"):
            static = set()
        if m := _CONSTANT.match(line):
            static.add(m.group(1))
        elif m := _CASE.match(line):
            if m.group(2) in static:
                static.add(m.group(1))
            else:
                cases += 1
    return cases, text.count("stablehlo.while")


def trace_events(directory: Path, name: str) -> int:
    """Events whose name contains ``name`` in the ``jax.profiler`` traces under ``directory``."""
    count = 0
    for path in directory.rglob("perfetto_trace.json.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            trace = json.load(f)
        events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
        count += sum(name in str(event.get("name", "")) for event in events)
    return count


def host_copies(call: Callable[[], Any], calls: int = 3) -> float:
    """Device-to-host copies per call of ``call`` (warm), counted in a ``jax.profiler`` trace.

    Each copy is one event named :data:`D2H_EVENT` on the device's lines of the trace
    (0 on a CPU, which has none).
    """
    jax.block_until_ready(call())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(call())
        return trace_events(Path(tmp), D2H_EVENT) / calls


def _copy_seconds(x: jax.Array, repeats: int) -> float:
    """Median time of a jitted copy of ``x`` (read once, written once)."""
    copy = jax.jit(lambda x: x * 1).lower(x).compile()
    calls = {"copy": (functools.partial(copy, x), jax.block_until_ready)}
    return harness.median_times(calls, repeats)["copy"][0]


def run(
    cases: Sequence[tuple[Workload, float]],
    repeats: int,
    seed: int,
    deadline: float | None = None,
) -> harness.Section:
    """The table: one row per (workload, norm, kind).

    Args:
      cases: (workload, 1-norm) pairs, run in float32.
      repeats: timed calls per measurement.
      seed: random seed.
      deadline: a ``time.perf_counter()`` after which the remaining cases are
        skipped (and named under the table); None: no limit.

    Returns:
      One table.
    """
    gpu = jax.default_backend() == "gpu"
    paths = {p: v for p, v in PATHS.items() if gpu or not v[1]}
    compiled: dict[tuple, Any] = {}
    trips: dict[tuple, int] = {}
    rows, skipped = [], []
    for w, norm in harness.progress(cases, desc="gpu paths", unit="case"):
        if harness.past(deadline):
            skipped.append(f"{w.label} ‖A‖₁={norm:g}")
            continue
        rng = np.random.default_rng([seed, ord(w.key)])
        x = jnp.asarray(harness.random_with_norm(rng, w.shape, norm, DTYPE))
        g = jnp.asarray(rng.standard_normal(w.shape).astype(DTYPE))
        floor = _copy_seconds(x, repeats)
        for kind, make in KINDS.items():
            for path, (expm, options) in paths.items():
                key = (path, kind, w.shape)
                if key not in compiled:
                    lowered = jax.jit(make(expm)).lower(x, g)
                    trips[key] = sum(round_trips(lowered.as_text()))
                    try:
                        compiled[key] = lowered.compile(compiler_options=options or None)
                    except Exception as error:  # an option this jaxlib does not know
                        compiled[key] = error
            calls = {
                p: (functools.partial(compiled[p, kind, w.shape], x, g), jax.block_until_ready)
                for p in paths
                if not isinstance(compiled[p, kind, w.shape], Exception)
            }
            times = {p: t for p, (t, _) in harness.median_times(calls, repeats).items()}
            # The profiler's count, on GPUs (a CPU makes no device-to-host copies).
            copies = {p: host_copies(call) for p, (call, _) in calls.items()} if gpu else {}
            rows.append(
                [
                    w.label,
                    f"{norm:g}",
                    kind,
                    harness.ms(floor),
                    *(harness.ms(times.get(p)) for p in PATHS),
                    *(harness.ratio(times.get(p), floor) for p in PATHS),
                    *(trips.get((p, kind, w.shape)) for p in PATHS),
                    *(harness.fmt(copies.get(p), ".1f") for p in PATHS),
                ]
            )
    errors = sorted({f"{k[0]}: {v}" for k, v in compiled.items() if isinstance(v, Exception)})
    note = "".join(f"\n\nNot compiled, {e}" for e in errors)
    return harness.Section(
        f"### expm's paths, {DTYPE} (median ms; floor = a jitted copy of the input, "
        "bytes in and out; round trips = data-dependent case and while ops of the "
        "program; D2H/call = device-to-host copies per call in a jax.profiler trace, "
        f"GPUs only)\n\n{harness.markdown_table(HEADERS, rows)}"
        f"{harness.skipped_note(skipped)}{note}",
        harness.records(HEADERS, rows),
    )
