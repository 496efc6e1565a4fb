"""The action e^X B by truncated Taylor series, on (..., n, n) and (..., n, k) arrays.

Al-Mohy and Higham's algorithm [AH11] (Algorithm 3.2 and Code Fragment 3.1), adapted
to batches: every value-dependent choice is made on device, per member, and the loops
run to the batch's largest count with the members that are done held fixed.

* Shift: X0 = X - mu I with mu = tr(X)/n, so e^X B = e^mu e^X0 B ([AH11], section 3.1).
* Selection: order m <= M_MAX = 55 and steps s >= 1 minimising the cost m s (products of
  X0 with the n x k block), subject to s >= alpha / theta_m, where theta_m is the largest
  norm for which the backward error of the degree-m Taylor polynomial is at most tol
  (:func:`theta`) and alpha bounds the norms of the powers of X0 ([AH11], (3.11)).
  alpha is ||X0||_1, or, for orders m >= p(p-1) - 1, the sharper
  alpha_p = max(d_p, d_{p+1}) with d_p = ||X0^p||_1^(1/p) ([AH09], Theorem 4.2(a)),
  p = 2 .. P_MAX = 8. Here the norms of X0^2, X0^4, X0^8 are computed exactly (three
  n x n products) and ||X0^p|| for the other p <= 9 bounded by products of them, so
  each alpha_p is an upper bound of the true one and the error bound still holds.
* The three products are spent only when they can pay: when some member's cost
  without them exceeds their price, 3 n / k block products ([AH11], (3.13), with
  that price in place of the cost of the norm estimator).
  As in [AH11], Code Fragment 3.1, the powers are used only for members whose
  ||X0||_1 exceeds the bound of (3.13) (PLAIN_MAX / k): below it the plain bound's
  smaller steps also keep the cancellation in each Taylor sum small (section 8 of
  docs/design.md).
* Steps: F <- e^(mu/s) sum_{j<=m} (X0/s)^j F / j!, s times, each Taylor sum ending
  early once two consecutive terms are negligible, ||B_(j-1)|| + ||B_j|| <= tol ||F||
  in the infinity norm ([AH11], Algorithm 3.2, lines 13-16).
* Stiff members: where the steps would exceed MAX_STEPS, the member is marked formed
  (order FORMED, steps 1, no terms) and its value is expm(X) B, computed by the caller
  (``_multiply.py``); see docs/design.md, section 8, for why the bound is on the steps
  and not on the cost.

[AH11] A. H. Al-Mohy and N. J. Higham, "Computing the action of the matrix
       exponential, with an application to exponential integrators", SIAM J. Sci.
       Comput. 33(2) (2011) 488-511.
[AH09] A. H. Al-Mohy and N. J. Higham, "A new scaling and squaring algorithm for the
       matrix exponential", SIAM J. Matrix Anal. Appl. 31(3) (2009) 970-989.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _algorithm as alg
from . import _products

#: The largest Taylor order ([AH11], section 3: m_max = 55).
M_MAX = 55
#: The largest p of the bounds alpha_p ([AH11], section 3: p_max = 8).
P_MAX = 8
#: n x n products spent on the norms of X0^2, X0^4 and X0^8.
POWER_PRODUCTS = 3
#: Members that would need more scaling steps than this are formed instead: their
#: value is expm(X) B (about ||X||_1 > 8e4 in float64, 1e5 in float32).
MAX_STEPS = 1 << 12
#: [AH11] (3.13): the norms of powers are used only for members with
#: ||X0||_1 > PLAIN_MAX_COLUMNS * theta_(M_MAX) / k, i.e. 2 l p_max (p_max + 3) / m_max
#: with l = 2 as in the paper and SciPy.
PLAIN_MAX_COLUMNS = 2 * 2 * P_MAX * (P_MAX + 3) / M_MAX
#: The order marking a formed member: its value is expm(X) B, not the steps'.
FORMED = -1
#: Terms of the series of h_(m+1) summed by :func:`theta`: the terms beyond are below
#: 1e-300 relative for every order and every tol <= 2**-8.
_SERIES_TERMS = 400


def _series_scale(m: int) -> float:
    """rho_m < the radius of convergence of h_(m+1), the smallest |zero| of T_m.

    The coefficients are kept as c_k rho^k, which then neither overflow nor underflow
    in float64 over the terms summed (the smallest |zero| of T_m is 1 for m = 1, about
    2.6 for m = 5 and 16.3 for m = 55).
    """
    return 0.25 * m + 0.5


@functools.cache
def _series_coefficients(m: int) -> np.ndarray:
    """|c_k| rho^k, k = 1 .. _SERIES_TERMS - 1, of h_(m+1)(x) = log(e^-x T_m(x)) = sum c_k x^k.

    e^-x T_m(x) = 1 + q(x) with q(x) = sum_(k>m) (-1)^(k+m) C(k-1, m) x^k / k! (the
    convolution of the two series; sum_(j<=m) (-1)^j C(k, j) = (-1)^m C(k-1, m)); then
    f = log(1 + q) from (1 + q) f' = q': k f_k = k q_k - sum_(0<j<k) j f_j q_(k-j), in
    float64, for the series in y = x / rho (``_series_scale``).
    """
    terms = _SERIES_TERMS
    log_rho = math.log(_series_scale(m))
    q = np.zeros(terms)
    for k in range(m + 1, terms):
        log_mag = math.lgamma(k) - math.lgamma(m + 1) - math.lgamma(k - m) - math.lgamma(k + 1)
        q[k] = (-1.0) ** (k + m) * math.exp(log_mag + k * log_rho)
    f = np.zeros(terms)
    j = np.arange(terms)
    for k in range(m + 1, terms):
        f[k] = q[k] - np.dot(j[1:k] * f[1:k], q[k - 1 : 0 : -1]) / k
    return np.abs(f[1:])


@functools.cache
def theta(tol: float) -> np.ndarray:
    r"""theta_m for m = 1 .. M_MAX: the largest x with \tilde h_(m+1)(x) / x <= tol.

    \tilde h_(m+1)(x) = sum_k |c_k| x^k, the c_k of ``_series_coefficients``: for
    ||X / s||_1 <= theta_m the truncated Taylor series of X / s is the exponential of a
    perturbed X / s + dX with ||dX|| <= tol ||X / s|| ([AH09], section 3; [AH11],
    (3.7)-(3.8)). Solved by bisection; for tol = 2**-53 and 2**-24 it reproduces
    [AH11], Table 3.1.
    """
    coefficients = np.stack([_series_coefficients(m) for m in range(1, M_MAX + 1)])
    rho = np.array([_series_scale(m) for m in range(1, M_MAX + 1)])

    def ratio(x: np.ndarray) -> np.ndarray:  # \tilde h(x) / x per order, Horner in x / rho
        y, out = x / rho, np.zeros_like(x)
        for c in coefficients.T[::-1]:
            out = out * y + c
        return out / rho

    lo, hi = np.zeros(M_MAX), np.ones(M_MAX)
    while np.any(low := ratio(hi) <= tol):
        lo, hi = np.where(low, hi, lo), np.where(low, 2 * hi, hi)
    for _ in range(100):
        mid = (lo + hi) / 2
        ok = ratio(mid) <= tol
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    lo.flags.writeable = False
    return lo


class ActionPath(NamedTuple):
    """The function of X that the action computed, per member (batch-shaped int32).

    Attributes:
      order: the Taylor order m (at least 1, also where the shifted X0 is zero; FORMED: the
        member's value is expm(X) B, computed outside the steps, which leave B as it is).
      steps: the number of scaling steps s (>= 1; 1 for formed members); 0 for members
        that return NaN (non-finite input).
    """

    order: jax.Array
    steps: jax.Array


def matvec(x: jax.Array, v: jax.Array) -> jax.Array:
    """(..., n, n) @ (..., n, k), in the product form measured fastest for n."""
    n = x.shape[-1]
    if _products.formulation(n, x.dtype.itemsize) == "broadcast":
        return _products.sum_axis(x[..., :, :, None] * v[..., None, :, :], -2)
    return _products.matmul_dot(x, v)


def outer(u: jax.Array, v: jax.Array) -> jax.Array:
    """(..., n, k) @ (..., n, k)^T, the n x n sum of k outer products."""
    if u.shape[-1] <= 4:
        return _products.sum_axis(u[..., :, None, :] * v[..., None, :, :], -1)
    return _products.matmul_dot(u, jnp.swapaxes(v, -1, -2))


def norm_inf(v: jax.Array) -> jax.Array:
    """Per-member infinity norm of an (..., n, k) block (0 for k = 0)."""
    return _products.max_axis(_products.sum_axis(jnp.abs(v), -1), -1)


def _eye_like(x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)


def shift(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(X0, mu): X0 = X - mu I with mu = tr(X) / n per member."""
    mu = jnp.trace(x, axis1=-2, axis2=-1) / x.shape[-1]
    return x - mu[..., None, None] * _eye_like(x), mu


def _cheapest(log2_alpha: jax.Array, log2_theta: np.ndarray, m_min: np.ndarray):
    """(m, s) minimising m s over the bounds alpha_p and the orders m >= m_min[p].

    s = max(ceil(alpha_p / theta_m), 1). ``log2_alpha`` is (..., P), one column per
    bound; ``m_min`` (P,). -inf (alpha = 0) gives s = 1.
    """
    batch = log2_alpha.shape[:-1]
    shape = (1,) * log2_alpha.ndim + (M_MAX,)
    orders = np.arange(1, M_MAX + 1).reshape(shape)
    log2_theta = np.asarray(log2_theta, log2_alpha.dtype).reshape(shape)
    ratio = jnp.exp2(log2_alpha[..., None] - log2_theta)  # alpha_p / theta_m
    # Clipped where no clipped candidate can beat one within MAX_STEPS steps.
    steps = jnp.maximum(jnp.ceil(jnp.minimum(ratio, 2.0 * M_MAX * MAX_STEPS)), 1)
    allowed = np.broadcast_to(orders >= m_min[:, None], steps.shape)  # (..., P, M_MAX)
    cost = jnp.where(allowed, orders.astype(steps.dtype) * steps, jnp.inf)
    flat = (*batch, steps.shape[-2] * M_MAX)
    best = jnp.argmin(cost.reshape(flat), axis=-1)
    s = jnp.take_along_axis(steps.reshape(flat), best[..., None], axis=-1)[..., 0]
    return (best % M_MAX + 1).astype(jnp.int32), s.astype(jnp.int32)


def _with_powers(x0, log2_n1, log2_theta, matmul):
    """(m, s) from alpha_1 = ||X0||_1 and the bounds alpha_p, p = 2 .. P_MAX."""
    x2 = matmul(x0, x0)
    x4 = matmul(x2, x2)
    x8 = matmul(x4, x4)
    log2_n = {1: log2_n1}
    for p, xp in ((2, x2), (4, x4), (8, x8)):
        # Never above the bound from the lower powers (rounding could put it there).
        log2_n[p] = jnp.fmin(jnp.log2(alg.norm1(xp)), 2 * log2_n[p // 2])

    def log2_d(p: int) -> jax.Array:  # log2 of the bound of ||X0^p||^(1/p)
        bits = [1 << i for i in range(4) if p >> i & 1]
        return functools.reduce(jnp.add, (log2_n[b] for b in bits)) / p

    alphas = [log2_n1] + [jnp.maximum(log2_d(p), log2_d(p + 1)) for p in range(2, P_MAX + 1)]
    m_min = np.array([1] + [p * (p - 1) - 1 for p in range(2, P_MAX + 1)])
    return _cheapest(jnp.stack(alphas, axis=-1), log2_theta, m_min)


def select(
    x0: jax.Array, k: int, tol: float, matmul, branch_free: bool = False
) -> tuple[ActionPath, jax.Array]:
    """The path for the shifted (..., n, n) X0 acting on n x k blocks, and the products.

    The products are the n x n ones spent on the norms of powers: a scalar, 0 or
    POWER_PRODUCTS for the whole batch. Non-finite members get steps 0 (their result
    is NaN); members needing more than MAX_STEPS steps get order FORMED and steps 1.
    ``branch_free`` (static): compute the norms of the powers whether or not they are
    used, in place of the ``cond`` (a host round trip on GPUs); the path and the
    products counted are the same.
    """
    n = x0.shape[-1]
    n1 = alg.norm1(x0)
    finite = alg.finite_member(n1)
    x0 = jnp.where(finite[..., None, None], x0, 0)
    log2_n1 = jnp.log2(jnp.where(finite, n1, 0))
    log2_theta = np.log2(theta(tol))
    m1, s1 = _cheapest(log2_n1[..., None], log2_theta, np.array([1]))
    # [AH11] (3.13): the powers only above PLAIN_MAX_COLUMNS theta_max / k; and they
    # cost 3 n^3 flops, 3 n / k block products: spend them only where the plain cost
    # is higher (k = 0: nothing to multiply, never).
    large = n1 > (PLAIN_MAX_COLUMNS * float(theta(tol)[-1]) / k if k else np.inf)
    worth = jnp.any(large & (m1 * s1 * k > POWER_PRODUCTS * n))
    if branch_free:
        m, s = _with_powers(x0, log2_n1, log2_theta, matmul)
        m, s = jnp.where(worth, m, m1), jnp.where(worth, s, s1)
    else:
        m, s = lax.cond(
            worth, lambda: _with_powers(x0, log2_n1, log2_theta, matmul), lambda: (m1, s1)
        )
    m, s = jnp.where(large, m, m1), jnp.where(large, s, s1)
    # A zero X0 (A a multiple of I) still takes one term: the value is the same, and the
    # derivative of the computed polynomial then carries the direction's part off the
    # multiples of I (order 0 would drop it: a constant has no derivative).
    zero = n1 == 0
    m = jnp.where(zero, 1, m)
    s = jnp.where(zero, 1, s)
    formed = finite & ~zero & (s > MAX_STEPS)
    m = jnp.where(formed, FORMED, m)
    s = jnp.where(formed, 1, s)
    s = jnp.where(finite, s, 0)
    spent = jnp.where(worth, POWER_PRODUCTS, 0).astype(jnp.int32)
    return ActionPath(m, s), spent


class Step(NamedTuple):
    """What every step of a member uses: F <- eta sum_j (X0 / s)^j F / j!."""

    x0: jax.Array  # the shifted matrix, (..., n, n)
    s: jax.Array  # the number of steps as a real number (1 where steps = 0), (...)
    eta: jax.Array  # e^(mu / s), (...)


def step_of(x: jax.Array, path: ActionPath) -> Step:
    """The shifted matrix and the factors of every step.

    X0 itself is used, not X0 / s: a rounded X0 / s would repeat its rounding in every
    step, while the factor 1 / (s j) applied to each product rounds independently (as
    in SciPy's implementation; docs/design.md, section 8).
    """
    x0, mu = shift(x)
    mu = jnp.where(path.order == FORMED, 0, mu)  # formed members: F = B, no overflow
    s = jnp.maximum(path.steps, 1).astype(jnp.finfo(x.dtype).dtype)
    return Step(x0, s, jnp.exp(mu / s.astype(mu.dtype)))


def _coefficient(step: Step, j: jax.Array, dtype) -> jax.Array:
    """1 / (s j) per member, shaped to scale (..., n, k) blocks."""
    return (1 / (step.s * j.astype(step.s.dtype))).astype(dtype)[..., None, None]


def taylor_step(step: Step, f, order, active, tol: float, record: int = 0):
    """One step, F <- eta sum_(j <= q) (X0/s)^j F / j!, for the members where ``active``.

    q <= ``order`` per member, ending early as in [AH11], Algorithm 3.2. With
    ``record`` > 0 the terms B_0 .. B_(record-1) are also returned, stacked on a
    leading axis (zero past q), for the transpose.

    Returns (F_new, q, total, terms): the new F, the number of terms q (0 where not
    active), the unscaled sum and the recorded terms (None without ``record``).
    """
    going = active & (order > 0)
    terms = None
    if record:
        terms = jnp.zeros((record, *f.shape), f.dtype).at[0].set(f)

    def body(carry):
        j, term, total, c1, going, q, terms = carry
        j = j + 1
        new = matvec(step.x0, term) * _coefficient(step, j, f.dtype)
        mask = going[..., None, None]
        total = jnp.where(mask, total + new, total)
        term = jnp.where(mask, new, term)
        q = jnp.where(going, j, q)
        c2 = norm_inf(new)
        done = (c1 + c2 <= tol * norm_inf(total)) | (j >= order)
        if terms is not None:
            slot = jnp.minimum(j, record - 1)  # j <= order <= M_MAX < record
            terms = terms.at[slot].set(jnp.where(mask, term, terms[slot]))
        return j, term, total, c2, going & ~done, q, terms

    init = (jnp.int32(0), f, f, norm_inf(f), going, jnp.zeros(order.shape, jnp.int32), terms)
    _, _, total, _, _, q, terms = lax.while_loop(lambda c: jnp.any(c[4]), body, init)
    f_new = jnp.where(active[..., None, None], step.eta[..., None, None] * total, f)
    return f_new, q, total, terms


def evaluate(x: jax.Array, b: jax.Array, path: ActionPath, tol: float):
    """(e^X B approximated along ``path``, block products per member), NaN where steps = 0.

    A function of (X, B) that JAX differentiates in forward mode (the loop counts and
    early terminations depend on values only through comparisons).
    """
    step = step_of(x, path)

    def body(i, carry):
        f, count = carry
        f, q, _, _ = taylor_step(step, f, path.order, i < path.steps, tol)
        return f, count + q

    f, count = lax.fori_loop(
        0, jnp.max(path.steps, initial=0), body, (b, jnp.zeros(path.steps.shape, jnp.int32))
    )
    return jnp.where((path.steps > 0)[..., None, None], f, jnp.nan), count


# The transpose keeps CHECKPOINTS of the states F_i of the forward pass (every c-th,
# c = ceil(max s / CHECKPOINTS)) and recomputes each F_i from the nearest one below:
# for s <= CHECKPOINTS nothing is recomputed, beyond it about s c / 2 steps are.
CHECKPOINTS = 32


def transpose(x, b, g, path: ActionPath, tol: float):
    """The transpose of (dX, dB) -> d evaluate(X, B) at (X, B), applied to G.

    Returns (gX, gB) under JAX's pairing sum X_ij Y_ij (no conjugation). Runs the
    steps backwards: each step's terms B_j are recomputed from its input F and its
    adjoint recurrence accumulates gX0 += sum_j gB_j B_(j-1)^T / (s j).
    """
    n = x.shape[-1]
    step = step_of(x, path)
    eta = step.eta
    steps = path.steps
    last = jnp.max(steps, initial=0)
    stride = jnp.maximum((last + CHECKPOINTS - 1) // CHECKPOINTS, 1)
    g = jnp.where((steps > 0)[..., None, None], g, 0)

    def forward(i, f):
        return taylor_step(step, f, path.order, i < steps, tol)[0]

    def keep(i, carry):
        f, saved = carry
        slot = i // stride
        saved = saved.at[slot].set(jnp.where(i % stride == 0, f, saved[slot]))
        return forward(i, f), saved

    _, saved = lax.fori_loop(0, last, keep, (b, jnp.zeros((CHECKPOINTS, *b.shape), b.dtype)))
    x0_t = jnp.swapaxes(step.x0, -1, -2)
    record = M_MAX + 1

    def back(r, carry):
        g, g_x0, g_eta = carry
        i = last - 1 - r
        start = (i // stride) * stride
        f = lax.fori_loop(start, i, forward, saved[i // stride])
        active = i < steps
        _, q, total, terms = taylor_step(step, f, path.order, active, tol, record)
        assert terms is not None
        g_eta = g_eta + jnp.where(active, jnp.sum(g * total, axis=(-2, -1)), 0)
        g_total = jnp.where(active[..., None, None], eta[..., None, None] * g, 0)

        def term(jj, inner):
            carried, g_x0 = inner
            j = jnp.max(q, initial=0) - jj
            on = (j <= q)[..., None, None]
            g_term = jnp.where(on, g_total + carried, 0)
            c = _coefficient(step, j, b.dtype)
            g_x0 = g_x0 + outer(g_term, terms[j - 1]) * c
            return jnp.where(on, matvec(x0_t, g_term) * c, carried), g_x0

        carried, g_x0 = lax.fori_loop(0, jnp.max(q, initial=0), term, (jnp.zeros_like(g), g_x0))
        g = jnp.where(active[..., None, None], g_total + carried, g)
        return g, g_x0, g_eta

    zero = jnp.zeros(steps.shape, b.dtype)
    g_b, g_x0, g_eta = lax.fori_loop(0, last, back, (g, jnp.zeros_like(step.x0), zero))
    # x0 = X - mu I, eta = e^(mu / s), mu = tr(X) / n.
    g_mu = g_eta * eta / step.s.astype(b.dtype) - jnp.trace(g_x0, axis1=-2, axis2=-1)
    g_x = g_x0 + (g_mu / n)[..., None, None] * _eye_like(g_x0)
    ok = (steps > 0)[..., None, None]
    return jnp.where(ok, g_x, jnp.nan), jnp.where(ok, g_b, jnp.nan)
