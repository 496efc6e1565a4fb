"""``python -m benchmarks.expm_multiply``: the action e^A B against forming e^A.

On the flow workloads (a)-(d) of :mod:`benchmarks.expm_speed` (one n x n matrix per
member), in float32, with one vector per matrix (k = 1, what a matrix-exponential
coupling needs) and with blocks of k = 16 columns, at 1-norms 2 and 30:

* ``jexpm.expm_multiply(a, b)`` (the action, Al-Mohy and Higham 2011);
* ``jexpm.expm(a) @ b`` and ``jax.scipy.linalg.expm(a) @ b`` (form, then multiply);
* ``scipy.sparse.linalg.expm_multiply`` in a host loop over members, in float64 (it
  has no batch and computes in float64 whatever the input), timed on the first
  ``--scipy-members`` members and scaled to the batch: a reference point, not a
  contender.

The JAX contenders are timed round-robin (medians), jax.scipy after them (as in
:mod:`benchmarks.expm_speed`). Errors are normwise relative 1-norm errors against
``scipy.linalg.expm(a) @ b`` in float64 on the same (float32-rounded) input, the maximum
over at most 256 members. The report ends with the crossover: for which n, k and norm
the action was faster than ``jexpm.expm(a) @ b`` in this run. Times come from one run
on one machine; on a shared machine they carry its noise.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.sparse.linalg

import jexpm

from . import expm_speed, harness
from .harness import default_output, finish

WORKLOADS = ("a", "b", "c", "d")
NORMS = (2.0, 30.0)
COLUMNS = (1, 16)
SCIPY_MEMBERS = 32
_ERROR_SUBSAMPLE = 256

HEADERS = [
    "workload",
    "k",
    "‖A‖₁",
    "action ms",
    "expm@b ms",
    "jax.scipy@b ms",
    "scipy host ms",
    "expm@b / action",
    "matvecs / k",
    "n×n products",
    "err action",
    "err expm@b",
]


def _contenders() -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    def form(expm):
        def apply(a, b):
            e = expm(a)
            if b.ndim == a.ndim - 1:
                return jnp.einsum("...ij,...j->...i", e, b, precision="highest")
            return jnp.matmul(e, b, precision="highest")

        return apply

    return {
        "action": jax.jit(jexpm.expm_multiply),
        "expm@b": jax.jit(form(jexpm.expm)),
        "jax.scipy@b": jax.jit(form(jax.scipy.linalg.expm)),
    }


def _scipy_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([scipy.sparse.linalg.expm_multiply(x, v) for x, v in zip(a, b, strict=True)])


def _reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, e^A b there): float64 scipy.linalg.expm on evenly spaced members."""
    idx = np.unique(np.linspace(0, len(a) - 1, _ERROR_SUBSAMPLE).astype(int))
    a64, b64 = a[idx].astype(np.float64), b[idx].astype(np.float64)
    e = np.stack([scipy.linalg.expm(x) for x in a64])
    return idx, np.einsum("...ij,...j->...i", e, b64) if b.ndim == 2 else e @ b64


def _error(y, idx, ref) -> float:
    y = np.asarray(y, np.float64)[idx]
    if y.ndim == 2:
        y, ref = y[..., None], ref[..., None]
    num = np.abs(y - ref).sum(axis=-2).max(axis=-1)
    den = np.abs(ref).sum(axis=-2).max(axis=-1)
    return float(np.max(num / den))


def _row(w, k: int, norm: float, fns, repeats: int, scipy_members: int, seed: int) -> list:
    rng = np.random.default_rng([seed, ord(w.key), k])
    a_np = harness.random_with_norm(rng, w.shape, norm, "float32")
    b_shape = (*w.batch, w.n) if k == 1 else (*w.batch, w.n, k)
    b_np = rng.standard_normal(b_shape).astype(np.float32)
    a, b = jnp.asarray(a_np), jnp.asarray(b_np)
    calls = {name: (functools.partial(fn, a, b), jax.block_until_ready) for name, fn in fns.items()}
    apart = {"jax.scipy@b": calls.pop("jax.scipy@b")}
    results = harness.median_times(calls, repeats) | harness.median_times(apart, repeats)
    members = min(scipy_members, w.batch[0])
    start = time.perf_counter()
    _scipy_loop(a_np[:members], b_np[:members])
    scipy_s = (time.perf_counter() - start) * w.batch[0] / members if members else None
    _, info = jexpm.expm_multiply(a, b, return_info=True)
    idx, ref = _reference(a_np, b_np)
    times = {name: results[name][0] for name in fns}
    return [
        w.label,
        k,
        f"{norm:g}",
        *(harness.ms(times[name]) for name in fns),
        harness.ms(scipy_s),
        harness.ratio(times["expm@b"], times["action"]),
        f"{float(np.mean(np.asarray(info.matvecs))) / k:.1f}",
        f"{float(np.mean(np.asarray(info.matrix_products))):.1f}",
        harness.fmt(_error(results["action"][1], idx, ref), ".1e"),
        harness.fmt(_error(results["expm@b"][1], idx, ref), ".1e"),
    ]


def crossover(rows: Sequence[Sequence]) -> str:
    """Which (workload, k, norm) the action won against ``jexpm.expm(a) @ b``, as prose."""
    won, lost = [], []
    for row in rows:
        speedup = row[HEADERS.index("expm@b / action")]
        case = f"{row[0]} k={row[1]} ‖A‖₁={row[2]}"
        if speedup is None:
            continue
        (won if float(speedup.rstrip("×")) > 1 else lost).append(f"{case} ({speedup})")
    return (
        "Crossover in this run (expm@b time / action time; above 1 the action is faster):\n\n"
        f"- action faster: {', '.join(won) or 'none'}\n"
        f"- forming expm faster: {', '.join(lost) or 'none'}"
    )


def run(
    workloads: Sequence[str],
    columns: Sequence[int],
    norms: Sequence[float],
    repeats: int,
    scipy_members: int,
    seed: int,
) -> harness.Section:
    """The table: every contender on every workload, k and 1-norm; and the crossover."""
    fns = _contenders()
    cases = [(w, k, norm) for w in workloads for k in columns for norm in norms]
    rows = []
    for key, k, norm in harness.progress(cases, desc="expm_multiply", unit="case"):
        w = expm_speed.WORKLOADS[key]
        rows.append(_row(w, k, norm, fns, repeats, scipy_members, seed))
    note = (
        f"scipy host: ``scipy.sparse.linalg.expm_multiply`` looped over the first "
        f"{scipy_members} members on the host in float64, scaled to the batch (a "
        "reference point). matvecs / k: mean Taylor terms per member (products with the "
        "n x k block); n×n products: mean spent on the norms of powers."
    )
    table = harness.markdown_table(HEADERS, rows)
    text = f"### e^A B, float32 (median ms per call)\n\n{table}\n\n{note}\n\n{crossover(rows)}"
    return harness.Section(text, {"rows": harness.records(HEADERS, rows), "note": note})


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.expm_multiply",
        description="Benchmark jexpm.expm_multiply against forming the exponential.",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="subset of a,b,c,d")
    parser.add_argument("--norms", default=",".join(map(str, NORMS)), help="1-norms")
    parser.add_argument("--ks", default=",".join(map(str, COLUMNS)), help="columns of B")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    parser.add_argument(
        "--scipy-members",
        type=int,
        default=SCIPY_MEMBERS,
        help="members timed in the scipy host loop (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="markdown output file")
    args = parser.parse_args(argv)
    args.workloads = [k.strip() for k in args.workloads.split(",") if k.strip()]
    if not args.workloads or set(args.workloads) - set(WORKLOADS):
        parser.error(f"--workloads: choose from {','.join(WORKLOADS)}")
    args.norms = [float(v) for v in args.norms.split(",")]
    args.ks = [int(v) for v in args.ks.split(",")]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse_args(argv)
    start = time.perf_counter()
    section = run(args.workloads, args.ks, args.norms, args.repeats, args.scipy_members, args.seed)
    out = args.out or default_output("expm-multiply", False)
    finish(
        out, "expm_multiply benchmark", "benchmarks.expm_multiply", argv, {"speed": section}, start
    )


if __name__ == "__main__":
    main()
