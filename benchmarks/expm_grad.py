"""expm gradients: forward, reverse- and forward-mode time and compiled scratch memory.

For each (workload, 1-norm), in float32, jexpm against jax.scipy.linalg.expm: the
forward pass, ``jax.grad`` (the VJP with a random cotangent) and ``jax.jvp`` (the
Fréchet derivative along a random direction), each compiled ahead of time and timed
round-robin; memory is the compiled executable's scratch space over the input bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jexpm

from . import harness
from .expm_speed import Workload

#: (workload key, 1-norm) of a full run and of ``--quick``.
CASES = (("d", 30.0), ("d", 3000.0), ("a", 2.0), ("b", 2.0), ("c", 2.0))
QUICK_CASES = (("d", 30.0),)
DTYPE = "float32"


def _forward(expm: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``a, g -> expm(a)``; g is unused, so forward and gradient take the same arguments."""
    return lambda a, g: expm(a)


def _gradient(expm: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``a, g -> d/da sum(expm(a) * g)``: the VJP of expm at a with cotangent g."""
    return jax.grad(lambda a, g: jnp.sum(expm(a) * g))


def _tangent(expm: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``a, g -> L(a, g)``: forward mode, the JVP of expm at a along g."""
    return lambda a, g: jax.jvp(expm, (a,), (g,))[1]


_LIBS = {"jexpm": jexpm.expm, "jax.scipy": jax.scipy.linalg.expm}
_KINDS = {"fwd": _forward, "grad": _gradient, "jvp": _tangent}
HEADERS = [
    "workload",
    "‖A‖₁",
    *(
        h
        for lib in _LIBS
        for h in (f"{lib} fwd ms", f"{lib} grad ms", "grad/fwd", f"{lib} jvp ms", "jvp/fwd")
    ),
    "grad jax.scipy/jexpm",
    *(f"{lib} {kind} temp/input" for lib in _LIBS for kind in _KINDS),
]


def _temp_ratio(compiled, nbytes: int) -> float | None:
    """Compiled scratch memory as a multiple of ``nbytes`` (None if not reported)."""
    analysis = compiled.memory_analysis()
    return None if analysis is None else analysis.temp_size_in_bytes / nbytes


def run(
    cases: Sequence[tuple[Workload, float]],
    repeats: int,
    seed: int,
    deadline: float | None = None,
) -> harness.Section:
    """Forward, gradient and JVP time and compiled scratch memory, jexpm against jax.scipy.

    Args:
      cases: (workload, 1-norm) pairs, run in float32.
      repeats: timed calls per measurement.
      seed: random seed.
      deadline: a ``time.perf_counter()`` after which the remaining cases are
        skipped (and named under the table); None: no limit.

    Returns:
      One table.
    """
    compiled: dict[tuple, Any] = {}  # (lib, kind, shape) -> compiled executable
    rows, skipped = [], []
    for w, norm in harness.progress(cases, desc="grad", unit="case"):
        if harness.past(deadline):
            skipped.append(f"{w.label} ‖A‖₁={norm:g}")
            continue
        rng = np.random.default_rng([seed, ord(w.key)])
        x = jnp.asarray(harness.random_with_norm(rng, w.shape, norm, DTYPE))
        g = jnp.asarray(rng.standard_normal(w.shape).astype(DTYPE))
        for lib, expm in _LIBS.items():
            for kind, make in _KINDS.items():
                if (lib, kind, w.shape) not in compiled:
                    compiled[lib, kind, w.shape] = jax.jit(make(expm)).lower(x, g).compile()
        calls = {
            (lib, kind): (
                functools.partial(compiled[lib, kind, w.shape], x, g),
                jax.block_until_ready,
            )
            for lib in _LIBS
            for kind in _KINDS
        }
        times = {key: t for key, (t, _) in harness.median_times(calls, repeats).items()}
        memory = {key: _temp_ratio(compiled[(*key, w.shape)], x.nbytes) for key in calls}
        rows.append(
            [
                w.label,
                f"{norm:g}",
                *(
                    cell
                    for lib in _LIBS
                    for cell in (
                        harness.ms(times[lib, "fwd"]),
                        harness.ms(times[lib, "grad"]),
                        harness.ratio(times[lib, "grad"], times[lib, "fwd"]),
                        harness.ms(times[lib, "jvp"]),
                        harness.ratio(times[lib, "jvp"], times[lib, "fwd"]),
                    )
                ),
                harness.ratio(times["jax.scipy", "grad"], times["jexpm", "grad"]),
                *(harness.fmt(memory[lib, kind], ".1f", "×") for lib in _LIBS for kind in _KINDS),
            ]
        )
    return harness.Section(
        f"### Gradients, {DTYPE} (median ms; temp = compiled scratch memory / input "
        f"bytes)\n\n{harness.markdown_table(HEADERS, rows)}{harness.skipped_note(skipped)}",
        harness.records(HEADERS, rows),
    )
