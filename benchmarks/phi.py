r"""``python -m benchmarks.phi``: φ₀..φₖ by the augmented matrix or by modified squaring.

Two ways of computing :math:`\varphi_0(A), \dots, \varphi_k(A)`, with
:math:`\varphi_j(z) = \sum_{i \ge 0} z^i / (i + j)!`:

* **augmented**: ``jexpm.phi(a, k)``, the first block row of :math:`e^W` for the
  (k+1)n x (k+1)n block matrix :math:`W = [[A, I, 0, \dots], [0, 0, I, \dots], \dots,
  [0, \dots, 0]]`, by ``jexpm.expm`` (on-device order and squarings per member, exact
  derivatives in both modes). Every product is of size (k+1)n: XLA does not see the
  block structure, so one product costs about :math:`(k+1)^3` products of size n.
* **modified squaring**: :func:`sw_phi`, a prototype written here in ``jax.numpy`` of
  the scaling and modified squaring method of B. Skaflestad and W. M. Wright, "The
  scaling and modified squaring method for matrix functions related to the
  exponential", Appl. Numer. Math. 59 (2009) 783-799 (its squaring relation for
  :math:`\varphi_j(2z)`, section 2 as we read it; the paper approximates the scaled
  φ's by Padé approximants, this prototype by truncated Taylor series). Every product
  is of size n.

**The squaring relation.** With :math:`N` the nilpotent block shift (the lower right
k x k blocks of W), the first block row of :math:`e^{tW}` is
:math:`[\varphi_0(tA), t\varphi_1(tA), \dots, t^k\varphi_k(tA)]` and block (i, j) of
:math:`e^{tN}` is :math:`t^{j-i}/(j-i)!\, I` for :math:`j \ge i \ge 1`. Reading block j
of the first row of :math:`e^{2W} = e^W e^W` gives

.. math:: \varphi_j(2X) = 2^{-j}\Big[\varphi_0(X)\varphi_j(X)
          + \sum_{i=1}^{j} \frac{\varphi_i(X)}{(j-i)!}\Big],

so one squaring of all k+1 functions costs k+1 products of size n (:math:`\varphi_0
\varphi_j`, j = 0..k). The relation is checked numerically by
``tests/benchmarks/test_phi_bench.py`` (against ``scipy.linalg.expm`` of W at 2X).

**The prototype.** Per member, s = max(0, ceil(log2(‖A‖₁ / θ))) and X = 2^-s A, so
‖X‖₁ <= θ. The series of :math:`\varphi_k(X)` is summed to degree m by
Paterson–Stockmeyer (powers X²..X^p shared, Horner in X^p, p minimising the products),
then :math:`\varphi_j = X\varphi_{j+1} + I/j!` for j = k-1..0 (k products), which is
exactly the series of :math:`\varphi_j` to degree m + k - j. Then s modified squarings,
as one loop to the batch's largest s in which members past their own s are left
unchanged (as ``jexpm.expm`` squares a batch). Products are written in the form
``jexpm`` chooses for size n (``jexpm._products.matmul``), so the two methods differ in
algorithm, not in product form.

**Degree and θ.** For ‖X‖₁ <= θ the tail of the series of :math:`\varphi_j` past
degree d has norm at most :math:`t_j(d) = \sum_{i > d} \theta^i / (i + j)!`, and
:math:`\|\varphi_j(X)\|_1 \ge \ell_j`, with :math:`\ell_0 = e^{-\theta}`
(:math:`\|e^X\| \ge 1/\|e^{-X}\|`) and :math:`\ell_j = 2/j! - \varphi_j(\theta)` for
j >= 1 (the identity term less the rest). m is the least degree with
:math:`t_j(m + k - j) \le u\, \ell_j` for every j <= k, u the unit roundoff; θ = 2^t,
t = -5..1, minimises the cost at large norms, evaluation products − (k+1)·t (one more
squaring per halving of θ). The bound ℓ_j > 0 fails for θ = 2, and θ = 1 wins for every
k and dtype measured: m = 17, 16, 15, 14 (float64) and 10, 9, 8, 7 (float32) for
k = 1, 2, 3, 5. The report lists (θ, m, p, products). The degree is fixed per call
(not chosen per norm, as ``jexpm`` does), and s comes from ‖A‖₁ alone, which
overscales non-normal matrices; both favour the augmented route at small norms and on
non-normal input, and a library version would refine them.

**What is measured**, for float64 and float32, n in {4, 8, 16, 32, 64}, k in
{1, 2, 3, 5} and Gaussian matrices of 1-norms 0.1, 3 and 100 (batch 256 for n <= 8,
fewer above, :data:`BATCH`):

* time: median of jitted calls after a warm-up, the two methods round-robin
  (``harness.median_times``), on the already compiled executables; and the products
  each ran (of size (k+1)n for ``jexpm.phi``, as its ``expm`` of W reports them; of
  size n for the prototype), turned into a flop ratio;
* compile time: ``jax.jit(f).lower(x).compile()`` of each, per (dtype, n, k);
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
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax

import jexpm
from jexpm import _products

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


# --- the prototype -------------------------------------------------------------------


def _phi_scalar(j: int, x: float) -> float:
    return math.fsum(x**i / math.factorial(i + j) for i in range(80))


def _tail(theta: float, degree: int, j: int) -> float:
    """Σ_{i > degree} θ^i / (i + j)!: the tail of φ_j's series at ‖X‖ <= θ."""
    return math.fsum(theta**i / math.factorial(i + j) for i in range(degree + 1, degree + 80))


def _lower(theta: float, j: int) -> float:
    """A lower bound of ‖φ_j(X)‖₁ for ‖X‖₁ <= θ (see the module docstring)."""
    return math.exp(-theta) if j == 0 else 2 / math.factorial(j) - _phi_scalar(j, theta)


def _ps_split(m: int) -> tuple[int, int]:
    """(p, products) of Paterson–Stockmeyer for degree m: X²..X^p, Horner in X^p."""
    if m <= 1:
        return 1, 0
    return min(((p, p - 1 + m // p) for p in range(2, m + 1)), key=lambda c: (c[1], c[0]))


class Parameters(NamedTuple):
    """The prototype's constants for one (k, dtype): see the module docstring."""

    theta: float
    degree: int  # m, the degree of φ_k's series
    p: int  # Paterson–Stockmeyer block size
    products: int  # evaluation products (PS of φ_k, then k for the recurrence)


@functools.cache
def parameters(k: int, dtype: str) -> Parameters:
    """θ and the degree m for φ_0..φ_k in ``dtype`` (module docstring, "Degree and θ")."""
    u = _UNIT_ROUNDOFF[dtype]
    best: tuple[float, Parameters] | None = None
    for t in range(-5, 2):
        theta = 2.0**t
        if any(_lower(theta, j) <= 0 for j in range(k + 1)):
            continue
        m = next(
            m
            for m in range(80)
            if all(_tail(theta, m + k - j, j) <= u * _lower(theta, j) for j in range(k + 1))
        )
        p, ps = _ps_split(m)
        params = Parameters(theta, m, p, ps + k)
        cost = params.products - (k + 1) * t
        if best is None or cost < best[0]:
            best = (cost, params)
    assert best is not None
    return best[1]


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return _products.matmul(a, b)


def _eye_like(a: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)


def _series(x: jax.Array, coeffs: Sequence[float], p: int) -> jax.Array:
    """Σ c_i X^i by Paterson–Stockmeyer with blocks of p (X^0..X^(p-1) stored, Horner in X^p)."""
    eye = _eye_like(x)
    powers = [eye, x]
    for _ in range(2, p):
        powers.append(_matmul(powers[-1], x))
    blocks = [coeffs[i : i + p] for i in range(0, len(coeffs), p)]

    def block(cs: Sequence[float]) -> jax.Array:
        return sum((c * powers[r] for r, c in enumerate(cs)), jnp.zeros_like(x))

    if len(blocks) == 1:
        return block(blocks[0])
    xp = _matmul(powers[-1], x) if p > 1 else x
    out = block(blocks[-1])
    for cs in reversed(blocks[:-1]):
        out = _matmul(out, xp) + block(cs)
    return out


def squarings(a: jax.Array, theta: float) -> jax.Array:
    """Per member, s = max(0, ceil(log2(‖A‖₁ / θ))), as int32."""
    norm = jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1)
    s = jnp.ceil(jnp.log2(norm / theta))
    return jnp.maximum(jnp.where(jnp.isfinite(s), s, 0), 0).astype(jnp.int32)


def sw_phi(a: jax.Array, k: int) -> jax.Array:
    """φ_0(A)..φ_k(A), shape (..., k + 1, n, n), by scaling and modified squaring.

    The prototype of the module docstring: per-member s from the 1-norm, Taylor series
    of φ_k to the degree of :func:`parameters` (then the recurrence down to φ_0), and s
    modified squarings in one loop to the batch's largest s.
    """
    params = parameters(k, jnp.dtype(a.dtype).name)
    s = squarings(a, params.theta)
    x = a * jnp.exp2(-s.astype(a.dtype))[..., None, None]
    coeffs = [1 / math.factorial(i + k) for i in range(params.degree + 1)]
    phis = [_series(x, coeffs, params.p)]  # φ_k, then φ_(k-1), ..., φ_0
    eye = _eye_like(x)
    for j in range(k - 1, -1, -1):
        phis.append(_matmul(x, phis[-1]) + eye / math.factorial(j))
    p = jnp.stack(phis[::-1], axis=-3)  # (..., k + 1, n, n)
    # Σ_{i=1..j} φ_i / (j - i)!, then 2^-j: constant (k + 1) x (k + 1) matrices.
    mix = np.array(
        [
            [1 / math.factorial(j - i) if 1 <= i <= j else 0.0 for i in range(k + 1)]
            for j in range(k + 1)
        ]
    )
    halves = np.array([2.0**-j for j in range(k + 1)])[:, None, None]

    def square(step, p):
        head = jnp.broadcast_to(p[..., :1, :, :], p.shape)
        new = _matmul(head, p) + jnp.einsum("ji,...inm->...jnm", mix.astype(p.dtype), p)
        new = new * halves.astype(p.dtype)
        return jnp.where((step < s)[..., None, None, None], new, p)

    return lax.fori_loop(0, jnp.max(s, initial=0), square, p)


def sw_products(a: np.ndarray, k: int, dtype: str) -> int:
    """Products of size n the prototype runs on batch ``a``: evaluation + (k+1)·max s."""
    params = parameters(k, dtype)
    norm = np.abs(np.asarray(a, np.float64)).sum(axis=-2).max(axis=-1)
    s = np.maximum(np.ceil(np.log2(np.maximum(norm, 1e-300) / params.theta)), 0)
    return params.products + (k + 1) * int(np.max(s, initial=0))


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
    return {"augmented": functools.partial(jexpm.phi, k=k), "S–W": functools.partial(sw_phi, k=k)}


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
    "S–W ms",
    "aug / S–W",
    "aug products ((k+1)n)",
    "S–W products (n)",
    "flop ratio",
    "aug err (max j)",
    "S–W err (max j)",
]
COMPILE_HEADERS = ["dtype", "n", "k", "aug compile s", "S–W compile s", "aug / S–W"]


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
        compiled, secs = {}, {}
        for name, fn in _methods(k).items():
            secs[name], compiled[name] = _compile(fn, x0)  # before any call of the shape
        t_aug, t_sw = secs["augmented"], secs["S–W"]
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
            members = a_np[:_ORACLE_MEMBERS]
            ref = scipy_phi(members, k)
            errs = {
                name: max(phi_errors(np.asarray(out)[:_ORACLE_MEMBERS], ref))
                for name, (_, out) in res.items()
            }
            aug_p, sw_p = _aug_products(a, k), sw_products(a_np, k, dtype)
            t_aug, t_sw = res["augmented"][0], res["S–W"][0]
            flops = harness.fmt(aug_p * (k + 1) ** 3 / sw_p, ".1f") if sw_p else None
            rows.append(
                [
                    *(dtype, n, k, shape[0], f"{norm:g}", harness.ms(t_aug), harness.ms(t_sw)),
                    *(harness.ratio(t_aug, t_sw), aug_p, sw_p, flops),
                    *(harness.fmt(errs["augmented"], ".1e"), harness.fmt(errs["S–W"], ".1e")),
                ]
            )
    note = (
        "Median ms per call of the compiled executables (round-robin). aug / S–W: above 1 "
        "the prototype is faster. Products: the largest per member, as run by the batch "
        "(``jexpm.expm``'s own count for W; the prototype's evaluation plus (k+1) per "
        "squaring to the batch's largest s); flop ratio = aug products · (k+1)³ / S–W "
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
        "``jax.jit(f).lower(x).compile()`` seconds, once per (dtype, n, k). Median aug / S–W: "
        f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})."
    )
    comp = Section(
        f"### Compile time\n\n{harness.markdown_table(COMPILE_HEADERS, compile_rows)}\n\n{cnote}",
        {"rows": harness.records(COMPILE_HEADERS, compile_rows), "note": cnote},
    )
    return speed, comp


def summary(rows: Sequence[Sequence[Any]]) -> str:
    """Per (dtype, k): the median over norms of aug / S–W per n, and the > 2x wins."""
    idx = TIME_HEADERS.index
    by: dict[tuple[str, int], dict[int, list[float]]] = {}
    wins: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in rows:
        key, r = (row[0], row[2]), float(row[idx("aug / S–W")])
        by.setdefault(key, {}).setdefault(row[1], []).append(r)
        err = float(row[idx("S–W err (max j)")]) / float(row[idx("aug err (max j)")])
        wins.setdefault(key, [])
        if r > 2:
            wins[key].append((r, err))
    lines = []
    for key, ns in sorted(by.items()):
        won, cases = wins[key], sum(map(len, ns.values()))
        medians = ", ".join(f"n={n} {statistics.median(v):.2f}" for n, v in sorted(ns.items()))
        line = f"- {key[0]}, k={key[1]}: {medians}; S–W > 2x in {len(won)} of {cases} cases"
        if won:
            line += (
                f" (by {min(w for w, _ in won):.1f}-{max(w for w, _ in won):.1f}x, its error "
                f"{min(e for _, e in won):.1f}-{max(e for _, e in won):.1f}x aug's)"
            )
        lines.append(line)
    return (
        "Per dtype and k: the median over the norms of aug / S–W time for each n (above 1 "
        "the prototype is faster), and the cases (n, norm) where the prototype was more "
        "than twice as fast, with its error relative to the augmented route's there:\n\n"
        + "\n".join(lines)
    )


HARD_HEADERS = [
    "class",
    "dtype",
    "n",
    "k",
    "‖A‖₁",
    "aug err φ_0..φ_k",
    "S–W err φ_0..φ_k",
    "S–W s",
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
                        sw = np.asarray(_jitted(k)["S–W"](a))
                        info = _expm_info(jnp.asarray(augmented(a_np, k)))
                        s = np.asarray(squarings(a, parameters(k, dtype).theta))
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
        "the largest squarings in the batch (the prototype's of A; jexpm's of W). Classes: "
        "``hard_matrices`` in ``benchmarks/phi.py``. The convection-diffusion φ_0 of norm "
        "1e3 is below float32's range at n = 4 (its slowest mode decays like e^-140): both "
        "methods flush it to zero or subnormals, hence relative errors of 1 there."
    )
    table = harness.markdown_table(HARD_HEADERS, rows)
    return Section(
        f"### Accuracy on harder matrices\n\n{table}\n\n{note}",
        {"rows": harness.records(HARD_HEADERS, rows), "note": note},
    )


MP_HEADERS = ["matrix", "n", "k", "‖A‖₁", "aug err", "S–W err", "scipy-oracle err"]


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
        sw = np.asarray(_jitted(k)["S–W"](jnp.asarray(a)))
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
    """The prototype's θ, degree, PS block and evaluation products per (dtype, k)."""
    headers = ["dtype", "k", "θ", "degree m of φ_k", "PS p", "evaluation products"]
    rows = [[d, k, *parameters(k, d)] for d in dtypes for k in ks]
    text = (
        "### The prototype's parameters\n\n"
        f"{harness.markdown_table(headers, rows)}\n\n"
        "Each squaring adds k+1 products of size n; s = max(0, ceil(log2(‖A‖₁/θ))) per member."
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
        description="jexpm.phi (augmented matrix) against scaling and modified squaring.",
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
        "phi: augmented matrix against modified squaring",
        "benchmarks.phi",
        argv,
        sections,
        start,
    )


if __name__ == "__main__":
    main()
