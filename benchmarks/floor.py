"""``python -m benchmarks.floor``: how close expm is to the cost of its own products.

For the flow workloads (a)-(d), per dtype and 1-norm, it measures

* the products opt15 actually runs (mean per member, from ``return_info``);
* the time of one batched product of the workload's shape in the form jexpm uses for
  it (``jexpm._products.matmul``), timed as a chain of :data:`CHAIN` dependent products
  in one compiled call (as the products of a polynomial run) and measured once per
  workload and dtype, and the rate that gives: GFLOP/s (2 n^3 per member) and GB/s (two
  operands read, one written);
* the floor, products x that time: what the products alone cost, with no additions,
  norms, selection or squaring logic;
* opt15's and ``jax.scipy.linalg.expm``'s times against the floor.

``jax.scipy / floor`` is the largest speedup over jax.scipy that any method running
that many products of that kind could reach on the machine: where it is below 10, a
10x lead is out of reach at this product count. For scale the report also gives the
machine's rates on large operands (a 1024 x 1024 product's GFLOP/s, a 256 MiB copy's
GB/s). Results go to ``benchmarks/results/floor-<backend>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jexpm
from jexpm import _products

from . import expm_speed, harness

WORKLOADS = ("a", "b", "c", "d")
#: Dependent products per timed call of :func:`product_time`.
CHAIN = 8
HEADERS = [
    "workload",
    "dtype",
    "‖A‖₁",
    "products",
    "1 product ms",
    "GFLOP/s",
    "GB/s",
    "floor ms",
    "opt15 ms",
    "opt15/floor",
    "jax.scipy ms",
    "jax.scipy/floor",
    "jax.scipy/opt15",
]


def _time(fn, *args, repeats: int) -> float:
    jitted = jax.jit(fn)
    return harness.median_times(
        {"f": (functools.partial(jitted, *args), jax.block_until_ready)}, repeats
    )["f"][0]


def machine_rates(dtype: str, repeats: int) -> tuple[float, float]:
    """(GFLOP/s of a 1024 x 1024 product, GB/s of a 256 MiB copy) in ``dtype``."""
    big = jnp.ones((1024, 1024), dtype)
    gflops = 2 * 1024**3 / _time(_products.matmul_dot, big, big, repeats=repeats) / 1e9
    data = jnp.ones((256 * 2**20 // jnp.dtype(dtype).itemsize,), dtype)
    gbytes = 2 * data.nbytes / _time(lambda x: x * 2, data, repeats=repeats) / 1e9
    return gflops, gbytes


def product_time(w: expm_speed.Workload, dtype: str, repeats: int) -> float:
    """Seconds per batched product of the workload's shape, from a chain of CHAIN."""

    def chain(x):
        y = x
        for _ in range(CHAIN):
            y = _products.matmul(y, x)
        return y

    x = jnp.asarray(harness.random_with_norm(np.random.default_rng(0), w.shape, 1.0, dtype))
    return _time(chain, x, repeats=repeats) / CHAIN


def _row(
    w: expm_speed.Workload, dtype: str, norm: float, one: float, repeats: int, seed: int
) -> list:
    rng = np.random.default_rng([seed, ord(w.key)])
    x = jnp.asarray(harness.random_with_norm(rng, w.shape, norm, dtype))
    products = float(jnp.mean(jexpm.expm(x, return_info=True)[1].products.astype(jnp.float32)))
    opt15 = _time(jexpm.expm, x, repeats=repeats)
    scipy = _time(jax.scipy.linalg.expm, x, repeats=repeats)
    members, n, itemsize = int(np.prod(w.batch)), w.n, jnp.dtype(dtype).itemsize
    floor = products * one
    return [
        w.label,
        dtype,
        f"{norm:g}",
        f"{products:.2f}",
        harness.ms(one),
        f"{2 * n**3 * members / one / 1e9:.1f}",
        f"{3 * n * n * members * itemsize / one / 1e9:.1f}",
        harness.ms(floor),
        harness.ms(opt15),
        harness.ratio(opt15, floor),
        harness.ms(scipy),
        harness.ratio(scipy, floor),
        harness.ratio(scipy, opt15),
    ]


def run(
    workloads: Sequence[expm_speed.Workload],
    dtypes: Sequence[str],
    norms: Sequence[float],
    repeats: int,
    seed: int,
) -> harness.Section:
    """The floor table, one row per workload (batched ones), dtype and norm."""
    rows, rates, one = [], {}, {}
    cases = [(w, d, v) for d in dtypes for w in workloads for v in norms]
    for w, dtype, norm in harness.progress(cases, desc="floor", unit="case"):
        if (w, dtype) not in one:
            one[w, dtype] = product_time(w, dtype, 2 * repeats)
        rows.append(_row(w, dtype, norm, one[w, dtype], repeats, seed))
    for dtype in dtypes:
        rates[dtype] = machine_rates(dtype, repeats)
    scale = "; ".join(
        f"{d}: {g:.0f} GFLOP/s (1024 x 1024 product), {b:.1f} GB/s (256 MiB copy)"
        for d, (g, b) in rates.items()
    )
    note = (
        "floor = products x the time of one batched product of the workload's shape in "
        f"jexpm's product form (a chain of {CHAIN} in one call, median of {2 * repeats} "
        f"calls); opt15 and jax.scipy: median of {repeats}. jax.scipy/floor bounds the "
        "speedup over jax.scipy of any method running that many such products."
        f" Large-operand rates for scale: {scale}."
    )
    table = harness.markdown_table(HEADERS, rows)
    data = {"rows": harness.records(HEADERS, rows), "rates": rates}
    return harness.Section(f"{note}\n\n{table}", data)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line (see the module docstring and ``--help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="of a,b,c,d")
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated")
    parser.add_argument(
        "--norms", default=",".join(map(str, expm_speed.NORMS)), help="comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed calls (default 7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="markdown output file")
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)
    workloads = [expm_speed.WORKLOADS[k.strip()] for k in args.workloads.split(",")]
    norms = [float(v) for v in args.norms.split(",")]
    out = args.out or harness.RESULTS / f"floor-{jax.default_backend()}.md"
    start = time.perf_counter()
    section = run(workloads, dtypes, norms, args.repeats, args.seed)
    harness.finish(out, "benchmarks.floor", "benchmarks.floor", argv, {"floor": section}, start)


if __name__ == "__main__":
    main()
