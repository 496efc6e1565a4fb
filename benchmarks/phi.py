r"""``python -m benchmarks.phi``: φ₀..φₖ by modified squaring or by the block matrix.

The two methods of :func:`jexpm.phi`, with :math:`\varphi_j(z) = \sum_{i \ge 0}
z^i / (i + j)!`:

* **squaring** (the default, ``jexpm.phi(a, k)``): the scaling and modified squaring
  of B. Skaflestad and W. M. Wright, "The scaling and modified squaring method for
  matrix functions related to the exponential", Appl. Numer. Math. 59 (2009) 783-799,
  with Taylor series for the scaled φ's (``jexpm/_phis.py``). Every product is of size
  n: k + 1 per squaring.
* **augmented** (``jexpm.phi(a, k, method="opt15")``): the first block row of
  :math:`e^W` for the (k+1)n x (k+1)n block matrix :math:`W = [[A, I, 0, \dots], [0,
  0, I, \dots], \dots, [0, \dots, 0]]`, by ``jexpm.expm``. XLA does not see the block
  structure, so one product costs about :math:`(k+1)^3` products of size n.

**What is measured**, for float64 and float32, n in {4, 8, 16, 32, 64}, k in
{1, 2, 3, 5} and Gaussian matrices of 1-norms 0.1, 3 and 100 (batch 256 for n <= 8,
fewer above, :data:`BATCH`):

* time: median of jitted calls after a warm-up, the two methods round-robin
  (``harness.median_times``), on the already compiled executables, of the value and of
  the gradient of :math:`\sum_j \langle \varphi_j(A), C_j \rangle` (reverse mode);
  and the products each ran (of size (k+1)n for the block matrix, as its ``expm`` of W
  reports them; of size n for modified squaring), turned into a flop ratio;
* compile time: ``jax.jit(f).lower(x).compile()`` of each value, per (dtype, n, k);
* accuracy: the largest normwise relative 1-norm error of each φ_j over the members,
  against ``scipy.linalg.expm`` of W in float64 on (at most 16 of) the same
  dtype-rounded inputs; on harder matrices (non-normal upper triangular, stiff
  symmetric and convection-diffusion operators of norm 1e3) in a table of their own;
  and against mpmath at 50 digits (``mpmath.expm`` of W) on one matrix per class at
  small n, which also checks the scipy oracle.

Times come from one run on one machine; on a shared machine they carry its noise.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import jexpm
from jexpm import _phis

from . import harness
from .harness import Section

SIZES = (4, 8, 16, 32, 64)
KS = (1, 2, 3, 5)
NORMS = (0.1, 3.0, 100.0)
DTYPES = ("float64", "float32")
BATCH = {4: 256, 8: 256, 16: 64, 32: 16, 64: 4}
QUICK_SIZES = (4, 8)
QUICK_KS = (1, 3)
QUICK_NORMS = (0.1, 30.0)
QUICK_BATCH = 16
HARD_CLASSES = ("triangular", "stiff symmetric", "convection-diffusion")
HARD_NORMS = {
    "triangular": (10.0, 100.0),
    "stiff symmetric": (1e3,),
    "convection-diffusion": (1e3,),
}
HARD_SIZES = (4, 16)
MP_DPS = 50
_ORACLE_MEMBERS = 16
_UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}


# --- inputs and oracles --------------------------------------------------------------


def augmented(a: np.ndarray, k: int) -> np.ndarray:
    """W of ``jexpm.phi`` for a (..., n, n) stack: A in the corner, identities above."""
    n = a.shape[-1]
    w = np.zeros((*a.shape[:-2], (k + 1) * n, (k + 1) * n), a.dtype)
    w[..., :n, :n] = a
    w[..., : k * n, n:] += np.kron(np.eye(k), np.eye(n)).astype(a.dtype)
    return w


def scipy_phi(a: np.ndarray, k: int) -> np.ndarray:
    """φ_0..φ_k of a (..., n, n) stack by ``scipy.linalg.expm`` of W in float64."""
    n = a.shape[-1]
    top = scipy.linalg.expm(augmented(np.asarray(a, np.float64), k))[..., :n, :]
    return np.stack([top[..., j * n : (j + 1) * n] for j in range(k + 1)], axis=-3)


def mp_phi(a: np.ndarray, k: int, dps: int = MP_DPS) -> np.ndarray:
    """φ_0..φ_k of one matrix by ``mpmath.expm`` of W at ``dps`` digits, in float64."""
    n = a.shape[-1]
    top = harness.mp_expm(augmented(np.asarray(a, np.float64), k), dps)[:n]
    return np.stack([top[:, j * n : (j + 1) * n] for j in range(k + 1)])


def hard_matrices(kind: str, rng: np.random.Generator, shape: tuple[int, ...], norm: float):
    """Harder test matrices of 1-norm ``norm`` (float64).

    * triangular: upper triangular, diagonal -|N(0, 1)|, strictly upper part 100 N(0, 1)
      (strongly non-normal);
    * stiff symmetric: -Q diag(λ) Qᵀ, λ log-spaced from 1e-2 norm to norm;
    * convection-diffusion: the upwinded 1-D operator ε Δ - D on n points with ε = 1/(2n)
      (non-normal, tridiagonal), negated so it is stable.
    """
    *batch, n, _ = shape
    if kind == "triangular":
        a = np.triu(100 * rng.standard_normal(shape), 1)
        a += np.abs(rng.standard_normal((*batch, n)))[..., None] * -np.eye(n)
    elif kind == "stiff symmetric":
        q, _ = np.linalg.qr(rng.standard_normal(shape))
        lam = np.logspace(-2, 0, n) * norm
        a = -(q * lam) @ np.swapaxes(q, -1, -2)
    elif kind == "convection-diffusion":
        eps, h = 1 / (2 * n), 1 / (n + 1)
        lap = (np.diag(-2 * np.ones(n)) + np.eye(n, k=1) + np.eye(n, k=-1)) / h**2
        upwind = (np.eye(n) - np.eye(n, k=-1)) / h
        one = eps * lap - upwind
        a = np.broadcast_to(one, shape) * (1 + 0.1 * rng.random((*batch, 1, 1)))
    else:
        raise ValueError(f"unknown matrix class {kind!r}; choose from {HARD_CLASSES}")
    return a * (norm / np.abs(a).sum(axis=-2).max(axis=-1))[..., None, None]


def phi_errors(p: np.ndarray, ref: np.ndarray) -> list[float]:
    """Per j, the largest normwise relative 1-norm error of φ_j over the members."""
    p = np.asarray(p, np.float64)
    return [harness.rel_err(p[..., j, :, :], ref[..., j, :, :]) for j in range(p.shape[-3])]


def _errs(values: Sequence[float]) -> str:
    return " ".join(f"{v:.0e}" for v in values)


# --- the report ----------------------------------------------------------------------


def _methods(k: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
    return {
        "augmented": functools.partial(jexpm.phi, k=k, method="opt15"),
        "squaring": functools.partial(jexpm.phi, k=k),
    }


def _gradient(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """Reverse mode of A -> Σ_j <φ_j(A), C_j>, C_j = (j + 1) / ((k + 1) n²) (fixed)."""

    def loss(a: jax.Array) -> jax.Array:
        p = fn(a)
        weights = jnp.arange(1, p.shape[-3] + 1, dtype=p.dtype)[:, None, None]
        return jnp.sum(p * weights) / p[..., 0, :, :].size

    return jax.grad(loss)


@functools.partial(jax.jit, static_argnums=1)
def _squaring_info(a: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(squarings, products) per member of ``jexpm.phi(a, k)``'s modified squaring."""
    tol = float(jnp.finfo(a.dtype).eps) / 2
    _, path, products = _phis.ModifiedSquaring(k, tol).compute(a, tol)
    return path.squarings, products


@functools.cache
def _jitted(k: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
    return {name: jax.jit(fn) for name, fn in _methods(k).items()}


@jax.jit
def _expm_info(w: jax.Array) -> jexpm.ExpmInfo:
    return jexpm.expm(w, return_info=True)[1]


def _compile(fn, x) -> tuple[float, Any]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(x).compile()
    return time.perf_counter() - start, compiled


def _aug_products(a: jax.Array, k: int) -> int:
    """Products of size (k+1)n ``jexpm.phi``'s expm of W runs on the batch (its largest)."""
    info = _expm_info(jnp.asarray(augmented(np.asarray(a), k)))
    return int(np.max(np.asarray(info.products)))


TIME_HEADERS = [
    "dtype",
    "n",
    "k",
    "batch",
    "‖A‖₁",
    "aug ms",
    "squaring ms",
    "aug / squaring",
    "aug grad ms",
    "squaring grad ms",
    "aug / squaring (grad)",
    "aug products ((k+1)n)",
    "squaring products (n)",
    "flop ratio",
    "aug err (max j)",
    "squaring err (max j)",
]
COMPILE_HEADERS = ["dtype", "n", "k", "aug compile s", "squaring compile s", "aug / squaring"]


def run_speed(
    dtypes: Sequence[str],
    sizes: Sequence[int],
    ks: Sequence[int],
    norms: Sequence[float],
    batch: Callable[[int], int],
    repeats: int,
    seed: int,
) -> tuple[Section, Section]:
    """The time and compile-time tables over every (dtype, n, k, norm)."""
    rows, compile_rows = [], []
    cases = [(d, n, k) for d in dtypes for n in sizes for k in ks]
    for dtype, n, k in harness.progress(cases, desc="phi", unit="case"):
        shape = (batch(n), n, n)
        x0 = jnp.zeros(shape, dtype)
        compiled, secs, grads = {}, {}, {}
        for name, fn in _methods(k).items():
            secs[name], compiled[name] = _compile(fn, x0)  # before any call of the shape
            grads[name] = _compile(_gradient(fn), x0)[1]
        t_aug, t_sw = secs["augmented"], secs["squaring"]
        compile_rows.append(
            [dtype, n, k, f"{t_aug:.2f}", f"{t_sw:.2f}", harness.ratio(t_aug, t_sw)]
        )
        for norm in norms:
            rng = np.random.default_rng([seed, n, k, int(norm * 10)])
            a_np = harness.random_with_norm(rng, shape, norm, dtype)
            a = jnp.asarray(a_np)
            calls = {
                name: (functools.partial(c, a), jax.block_until_ready)
                for name, c in compiled.items()
            }
            res = harness.median_times(calls, repeats)
            grad_calls = {
                name: (functools.partial(c, a), jax.block_until_ready) for name, c in grads.items()
            }
            gres = harness.median_times(grad_calls, repeats)
            g_aug, g_sw = gres["augmented"][0], gres["squaring"][0]
            members = a_np[:_ORACLE_MEMBERS]
            ref = scipy_phi(members, k)
            errs = {
                name: max(phi_errors(np.asarray(out)[:_ORACLE_MEMBERS], ref))
                for name, (_, out) in res.items()
            }
            aug_p = _aug_products(a, k)
            sw_p = int(np.max(np.asarray(_squaring_info(a, k)[1])))
            t_aug, t_sw = res["augmented"][0], res["squaring"][0]
            flops = harness.fmt(aug_p * (k + 1) ** 3 / sw_p, ".1f") if sw_p else None
            rows.append(
                [
                    *(dtype, n, k, shape[0], f"{norm:g}", harness.ms(t_aug), harness.ms(t_sw)),
                    harness.ratio(t_aug, t_sw),
                    *(harness.ms(g_aug), harness.ms(g_sw), harness.ratio(g_aug, g_sw)),
                    *(aug_p, sw_p, flops),
                    *(harness.fmt(errs["augmented"], ".1e"), harness.fmt(errs["squaring"], ".1e")),
                ]
            )
    note = (
        "Median ms per call of the compiled executables (round-robin); grad: reverse mode "
        "of Σ_j <φ_j(A), C_j> for fixed C_j. aug / squaring: above 1 modified squaring is "
        "faster. Products: the largest per member (``jexpm.expm``'s own count for W; "
        "modified squaring's evaluation plus (k+1) per squaring); flop ratio = aug "
        "products · (k+1)³ / squaring "
        "products. Errors: the largest normwise relative 1-norm error over φ_0..φ_k and "
        f"the first {_ORACLE_MEMBERS} members, against ``scipy.linalg.expm`` of W in float64. "
        "In float64 at large norms this is the oracle's own error, the same for both: the "
        "mpmath table below has scipy's expm of W 7e-13 off at ‖A‖₁ = 100 (n = 4) where "
        "both methods are within 2e-15."
    )
    speed = Section(
        "### Time and products, Gaussian matrices\n\n"
        f"{harness.markdown_table(TIME_HEADERS, rows)}\n\n{note}\n\n{summary(rows)}",
        {"rows": harness.records(TIME_HEADERS, rows), "note": note},
    )
    ratios = [float(r[-1]) for r in compile_rows]
    cnote = (
        "``jax.jit(f).lower(x).compile()`` seconds of the value, once per (dtype, n, k). "
        "Median aug / squaring: "
        f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})."
    )
    comp = Section(
        f"### Compile time\n\n{harness.markdown_table(COMPILE_HEADERS, compile_rows)}\n\n{cnote}",
        {"rows": harness.records(COMPILE_HEADERS, compile_rows), "note": cnote},
    )
    return speed, comp


def summary(rows: Sequence[Sequence[Any]]) -> str:
    """Per (dtype, k): the median over norms of aug / squaring per n, and the > 2x wins."""
    idx = TIME_HEADERS.index
    by: dict[tuple[str, int], dict[int, list[float]]] = {}
    wins: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in rows:
        key, r = (row[0], row[2]), float(row[idx("aug / squaring")])
        by.setdefault(key, {}).setdefault(row[1], []).append(r)
        err = float(row[idx("squaring err (max j)")]) / float(row[idx("aug err (max j)")])
        wins.setdefault(key, [])
        if r > 2:
            wins[key].append((r, err))
    lines = []
    for key, ns in sorted(by.items()):
        won, cases = wins[key], sum(map(len, ns.values()))
        medians = ", ".join(f"n={n} {statistics.median(v):.2f}" for n, v in sorted(ns.items()))
        line = f"- {key[0]}, k={key[1]}: {medians}; squaring > 2x in {len(won)} of {cases} cases"
        if won:
            line += (
                f" (by {min(w for w, _ in won):.1f}-{max(w for w, _ in won):.1f}x, its error "
                f"{min(e for _, e in won):.1f}-{max(e for _, e in won):.1f}x aug's)"
            )
        lines.append(line)
    return (
        "Per dtype and k: the median over the norms of aug / squaring time for each n (above "
        "1 modified squaring is faster), and the cases (n, norm) where modified squaring was "
        "more than twice as fast, with its error relative to the block matrix's there:\n\n"
        + "\n".join(lines)
    )


HARD_HEADERS = [
    "class",
    "dtype",
    "n",
    "k",
    "‖A‖₁",
    "aug err φ_0..φ_k",
    "squaring err φ_0..φ_k",
    "squaring s",
    "aug s (W)",
]


def run_hard(
    dtypes: Sequence[str],
    sizes: Sequence[int],
    ks: Sequence[int],
    members: int,
    seed: int,
) -> Section:
    """Errors of both methods on the harder classes against scipy's expm of W."""
    rows = []
    kmax = max(ks)
    for kind in HARD_CLASSES:
        for n in sizes:
            for norm in HARD_NORMS[kind]:
                rng = np.random.default_rng([seed, n, int(norm), HARD_CLASSES.index(kind)])
                a64 = hard_matrices(kind, rng, (members, n, n), norm)
                for dtype in dtypes:
                    a_np = a64.astype(dtype)
                    ref = scipy_phi(a_np, kmax)
                    a = jnp.asarray(a_np)
                    for k in ks:
                        aug = np.asarray(_jitted(k)["augmented"](a))
                        sw = np.asarray(_jitted(k)["squaring"](a))
                        info = _expm_info(jnp.asarray(augmented(a_np, k)))
                        s = np.asarray(_squaring_info(a, k)[0])
                        rows.append(
                            [
                                *(kind, dtype, n, k, f"{norm:g}"),
                                _errs(phi_errors(aug, ref[:, : k + 1])),
                                _errs(phi_errors(sw, ref[:, : k + 1])),
                                *(int(s.max()), int(np.max(np.asarray(info.squarings)))),
                            ]
                        )
    note = (
        f"{members} members per row; the largest normwise relative 1-norm error of each "
        "φ_j against ``scipy.linalg.expm`` of W in float64 on the dtype-rounded input. s: "
        "the largest squarings in the batch (modified squaring's of A; expm's of W). Classes: "
        "``hard_matrices`` in ``benchmarks/phi.py``. The convection-diffusion φ_0 of norm "
        "1e3 is below float32's range at n = 4 (its slowest mode decays like e^-140): both "
        "methods flush it to zero or subnormals, hence relative errors of 1 there."
    )
    table = harness.markdown_table(HARD_HEADERS, rows)
    return Section(
        f"### Accuracy on harder matrices\n\n{table}\n\n{note}",
        {"rows": harness.records(HARD_HEADERS, rows), "note": note},
    )


MP_HEADERS = ["matrix", "n", "k", "‖A‖₁", "aug err", "squaring err", "scipy-oracle err"]


def run_mpmath(cases: Sequence[tuple[str, int, float, int]], seed: int) -> Section:
    """float64 errors of both methods and of the scipy oracle against mpmath, per φ_j."""
    rows = []
    for kind, n, norm, k in harness.progress(cases, desc="mpmath", unit="matrix"):
        rng = np.random.default_rng([seed, n, int(norm), 7])
        if kind == "gaussian":
            a = harness.random_with_norm(rng, (1, n, n), norm, "float64")
        else:
            a = hard_matrices(kind, rng, (1, n, n), norm)
        ref = mp_phi(a[0], k)[None]
        aug = np.asarray(_jitted(k)["augmented"](jnp.asarray(a)))
        sw = np.asarray(_jitted(k)["squaring"](jnp.asarray(a)))
        rows.append(
            [kind, n, k, f"{norm:g}"]
            + [_errs(phi_errors(x, ref)) for x in (aug, sw, scipy_phi(a, k))]
        )
    note = (
        f"float64, one matrix per row; normwise relative 1-norm error of φ_0..φ_k against "
        f"``mpmath.expm`` of W at {MP_DPS} digits. scipy-oracle: ``scipy.linalg.expm`` of W "
        "in float64, the oracle of the other tables."
    )
    table = harness.markdown_table(MP_HEADERS, rows)
    return Section(
        f"### Against mpmath (float64)\n\n{table}\n\n{note}",
        {"rows": harness.records(MP_HEADERS, rows), "note": note},
    )


def parameters_section(dtypes: Sequence[str], ks: Sequence[int]) -> Section:
    """Modified squaring's θ, degree, PS block and evaluation products per (dtype, k)."""
    headers = ["dtype", "k", "θ", "degree m of φ_k", "PS p", "evaluation products"]
    rows = [[d, k, *_phis.plan(k, d, _UNIT_ROUNDOFF[d])] for d in dtypes for k in ks]
    text = (
        "### Modified squaring's parameters\n\n"
        f"{harness.markdown_table(headers, rows)}\n\n"
        "At the default tol (the unit roundoff). Each squaring adds k+1 products of size n; "
        "s per member from ‖A‖₁ and the norms of powers (``jexpm/_phis.py``)."
    )
    return Section(text, {"rows": harness.records(headers, rows)})


MP_CASES = (
    ("gaussian", 4, 1.0, 5),
    ("gaussian", 4, 100.0, 5),
    ("triangular", 4, 100.0, 5),
    ("stiff symmetric", 4, 1e3, 5),
    ("convection-diffusion", 4, 1e3, 5),
    ("gaussian", 8, 30.0, 3),
    ("triangular", 8, 100.0, 3),
)
QUICK_MP_CASES = (("gaussian", 4, 3.0, 2), ("triangular", 4, 30.0, 2))


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.phi",
        description="jexpm.phi: modified squaring against the block matrix.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default both)")
    parser.add_argument("--sizes", default=None, help="comma-separated n")
    parser.add_argument("--ks", default=None, help="comma-separated k")
    parser.add_argument("--norms", default=None, help="comma-separated 1-norms")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (7; quick 3)")
    parser.add_argument("--no-mpmath", action="store_true", help="leave out the mpmath table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="markdown file or folder")
    args = parser.parse_args(argv)

    def parse(text: str | None, default, cast):
        return default if text is None else [cast(v) for v in text.split(",") if v.strip()]

    args.dtypes = parse(args.dtypes, DTYPES, str.strip)
    args.sizes = parse(args.sizes, QUICK_SIZES if args.quick else SIZES, int)
    args.ks = parse(args.ks, QUICK_KS if args.quick else KS, int)
    args.norms = parse(args.norms, QUICK_NORMS if args.quick else NORMS, float)
    args.repeats = args.repeats or (3 if args.quick else 7)
    if set(args.dtypes) - set(DTYPES) or min(args.ks) < 1 or args.repeats < 1:
        parser.error("dtypes: float64, float32; k >= 1; repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``).

    Args:
      argv: command-line arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse_args(argv)
    start = time.perf_counter()

    def batch(n: int) -> int:
        return QUICK_BATCH if args.quick else BATCH.get(n, 4)

    with jax.enable_x64(True):  # float64 inputs, without changing the caller's setting
        speed, comp = run_speed(
            args.dtypes, args.sizes, args.ks, args.norms, batch, args.repeats, args.seed
        )
        sections = {"parameters": parameters_section(args.dtypes, args.ks), "speed": speed}
        sections["compile"] = comp
        hard_sizes = [n for n in args.sizes if n in HARD_SIZES] or args.sizes[:1]
        hard_ks = sorted({min(args.ks), max(args.ks)})
        members = 4 if args.quick else 8
        sections["hard"] = run_hard(args.dtypes, hard_sizes, hard_ks, members, args.seed)
        if not args.no_mpmath:
            mp_cases = QUICK_MP_CASES if args.quick else MP_CASES
            sections["mpmath"] = run_mpmath(mp_cases, args.seed)
    out = args.out or harness.default_output("phi", args.quick)
    if out.suffix != ".md":
        out = out / harness.default_output("phi", args.quick).name
    harness.finish(
        out,
        "phi: modified squaring against the block matrix",
        "benchmarks.phi",
        argv,
        sections,
        start,
    )


if __name__ == "__main__":
    main()
