"""expm speed: jexpm against jax.scipy.linalg.expm and torch.linalg.matrix_exp.

Wall time, accuracy and products of ``jexpm.expm`` (opt15, ps, baseline and
``jax.vmap``), ``jax.scipy.linalg.expm``, the paper's baseline as its authors ran it
(:mod:`benchmarks.paper_loop`, eager with a host read per term) and, if installed,
``torch.linalg.matrix_exp`` on workloads (a)-(f). Two ratios set the baselines side by
side: ``paper loop/opt15`` is the comparison the paper made, ``baseline/opt15`` the fair
one (the same series, jitted, no host round trips). jexpm's contenders of one input
are timed round-robin, the paper loop, jax.scipy and torch each after them: their idle
threads (threaded LAPACK, OpenMP) keep spinning for a while after a call and would slow
down whichever call came next. Errors are
normwise relative 1-norm errors against ``scipy.linalg.expm`` in float64 on the same
(dtype-rounded) input, the maximum over at most 256 members (dashes without SciPy). In
bfloat16, which ``jax.scipy.linalg.expm`` rejects, jax.scipy runs in float32 on the
rounded input and rounds its result.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jexpm

from . import harness, paper_loop, torch_adapter

NORMS = (0.5, 2.0, 30.0)
QUICK_NORMS = (2.0, 30.0)
QUICK_WORKLOADS = ("d", "f")
_ERROR_SUBSAMPLE = 256


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark input shape.

    Attributes:
      key: the letter of the workload, "a" to "f".
      batch: leading batch shape; () for a single matrix.
      n: matrix size.
      looped: the members are exponentiated one at a time, in a jitted
        ``lax.fori_loop`` over the batch axis; times are reported per call.
    """

    key: str
    batch: tuple[int, ...]
    n: int
    looped: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the input array."""
        return (*self.batch, self.n, self.n)

    @property
    def calls(self) -> int:
        """Number of expm calls one timed run makes (the time is divided by it)."""
        return self.batch[0] if self.looped else 1

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``(a) 65536×6×6``."""
        if self.looped:
            return f"({self.key}) {self.n}×{self.n} in fori_loop×{self.calls}"
        return f"({self.key}) " + "×".join(map(str, self.shape))


WORKLOADS = {
    w.key: w
    for w in (
        Workload("a", (65536,), 6),
        Workload("b", (16384,), 12),
        Workload("c", (4096,), 24),
        Workload("d", (64,), 48),
        Workload("e", (), 512),
        Workload("f", (100,), 48, looped=True),
    )
}


def scipy_expm(a: jax.Array) -> jax.Array:
    """``jax.scipy.linalg.expm``; in float32 for 16-bit input, which it rejects."""
    if a.dtype.itemsize < 4:
        return jax.scipy.linalg.expm(a.astype(jnp.float32)).astype(a.dtype)
    return jax.scipy.linalg.expm(a)


# The methods of the table, in column order.
_JAX_METHODS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "opt15": functools.partial(jexpm.expm, method="opt15"),
    "ps": functools.partial(jexpm.expm, method="ps"),
    "baseline": functools.partial(jexpm.expm, method="baseline"),
    "jax.scipy": scipy_expm,
}
PAPER_LOOP = "paper loop"
_METHODS = (*_JAX_METHODS, "vmap", PAPER_LOOP, "torch")
_ERROR_METHODS = ("opt15", "jax.scipy", "torch")
HEADERS = [
    "workload",
    "‖A‖₁",
    *(f"{m} ms" for m in _METHODS),
    "jax.scipy/opt15",
    "torch/opt15",
    "vmap/batched",
    "paper loop/opt15 (paper's comparison)",
    "baseline/opt15 (fair)",
    "opt15 products",
    *(f"err {m}" for m in _ERROR_METHODS),
]


def in_fori_loop(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """``fn`` applied to each member of a stack in turn, inside a ``lax.fori_loop``."""

    def looped(stack: jax.Array) -> jax.Array:
        out = jax.eval_shape(fn, stack[0])
        init = jnp.zeros((stack.shape[0], *out.shape), out.dtype)
        return lax.fori_loop(0, stack.shape[0], lambda i, acc: acc.at[i].set(fn(stack[i])), init)

    return looped


def _subsample(x: np.ndarray, n: int) -> np.ndarray:
    """At most ``_ERROR_SUBSAMPLE`` evenly spaced members of x, as (k, n, n)."""
    flat = np.asarray(x).reshape(-1, n, n)
    idx = np.unique(np.linspace(0, len(flat) - 1, _ERROR_SUBSAMPLE).astype(int))
    return flat[idx]


def _jax_contenders(w: Workload) -> dict[str, Callable[[jax.Array], jax.Array]]:
    """The jitted JAX contenders for one workload (vmap only for a plain batch)."""
    wrap = in_fori_loop if w.looped else (lambda f: f)
    fns = {name: jax.jit(wrap(fn)) for name, fn in _JAX_METHODS.items()}
    if w.batch and not w.looped:
        fns["vmap"] = jax.jit(jax.vmap(jexpm.expm))
    return fns


def _products_fn(w: Workload) -> Callable[[jax.Array], jax.Array]:
    """Jitted per-member product count of opt15 on the workload's input."""

    def products(a: jax.Array) -> jax.Array:
        return jexpm.expm(a, return_info=True)[1].products

    return jax.jit(in_fori_loop(products) if w.looped else products)


def _row(
    w: Workload,
    fns: dict[str, Callable[[jax.Array], jax.Array]],
    products: Callable[[jax.Array], jax.Array],
    x_np: np.ndarray,
    norm: float,
    repeats: int,
) -> list[str | None]:
    """Times, products and errors of every method on one input: one table row.

    A torch call that raises (e.g. a dtype its backend lacks) leaves its cells empty.
    """
    ref = harness.expm_reference(_subsample(x_np, w.n))
    x = jnp.asarray(x_np)
    calls = {name: (functools.partial(fn, x), jax.block_until_ready) for name, fn in fns.items()}
    apart = {name: calls.pop(name) for name in ("jax.scipy",) if name in calls}
    eager = paper_loop.looped if w.looped else paper_loop.expm
    paper = {PAPER_LOOP: (functools.partial(eager, x), jax.block_until_ready)}
    results = harness.median_times(calls, repeats)
    results |= harness.median_times(paper, repeats) | harness.median_times(apart, repeats)
    torch_call = torch_adapter.matrix_exp_call(x_np, looped=w.looped)
    if torch_call is not None:
        try:
            results |= harness.median_times({"torch": torch_call}, repeats)
        except RuntimeError:
            pass
    times = {m: results[m][0] / w.calls if m in results else None for m in _METHODS}
    errors = {
        m: harness.rel_err(_subsample(torch_adapter.to_numpy(results[m][1]), w.n), ref)
        if m in results and ref is not None
        else None
        for m in _ERROR_METHODS
    }
    mean_products = float(jnp.mean(products(x).astype(jnp.float32)))
    return [
        w.label,
        f"{norm:g}",
        *(harness.ms(times[m]) for m in _METHODS),
        harness.ratio(times["jax.scipy"], times["opt15"]),
        harness.ratio(times["torch"], times["opt15"]),
        harness.ratio(times["vmap"], times["opt15"]),
        harness.ratio(times[PAPER_LOOP], times["opt15"]),
        harness.ratio(times["baseline"], times["opt15"]),
        f"{mean_products:.2f}",
        *(harness.fmt(errors[m], ".1e") for m in _ERROR_METHODS),
    ]


def run(
    workloads: Sequence[Workload],
    dtypes: Sequence[str],
    norms: Sequence[float],
    repeats: int,
    seed: int,
    deadline: float | None = None,
) -> harness.Section:
    """The speed tables: every method on every workload, dtype and 1-norm.

    Args:
      workloads: the workloads to run.
      dtypes: "float32", "float64" and/or "bfloat16".
      norms: 1-norm of every member of the inputs.
      repeats: timed calls per measurement.
      seed: random seed (each workload draws one Gaussian stack, rescaled per norm).
      deadline: a ``time.perf_counter()`` after which the remaining cases are
        skipped (and named under the table); None: no limit.

    Returns:
      One table per dtype.
    """
    bar = harness.progress(
        total=len(workloads) * len(dtypes) * len(norms), desc="expm", unit="case"
    )
    tables, data = [], {}
    for dtype in dtypes:
        rows, skipped = [], []
        for w in workloads:
            if harness.past(deadline):
                skipped += [f"{w.label} ‖A‖₁={norm:g}" for norm in norms]
                continue
            fns, products = _jax_contenders(w), _products_fn(w)
            for norm in norms:
                if harness.past(deadline):
                    skipped.append(f"{w.label} ‖A‖₁={norm:g}")
                    continue
                bar.set_postfix_str(f"{dtype} {w.label} ‖A‖₁={norm:g}")
                rng = np.random.default_rng([seed, ord(w.key)])
                x_np = harness.random_with_norm(rng, w.shape, norm, dtype)
                rows.append(_row(w, fns, products, x_np, norm, repeats))
                bar.update()
        note = " (jax.scipy in float32, rounded)" if jnp.dtype(dtype).itemsize < 4 else ""
        tables.append(
            f"### expm, {dtype}{note} (median ms per call)\n\n"
            f"{harness.markdown_table(HEADERS, rows)}{harness.skipped_note(skipped)}"
        )
        data[dtype] = harness.records(HEADERS, rows)
        if skipped:
            data[f"{dtype} skipped"] = skipped
    bar.close()
    return harness.Section("\n\n".join(tables), data)
