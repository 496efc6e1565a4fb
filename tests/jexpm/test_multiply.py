"""expm_multiply: e^(tA) B against mpmath and SciPy, its selection, derivatives and API.

Accuracy criterion (float64): for each of the catalogue's hard matrices with
||A||_1 <= 2e4 (beyond, Al-Mohy and Higham's algorithm needs more than 2000 steps and
SciPy's reference run takes seconds), the largest relative error against mpmath over
t in {1, 1/4, -1} and 6 random vectors is within 10 x max(SciPy ``expm_multiply``'s
largest on the same problems, u). The maximum over several problems, rather than each
problem alone, because on ill-conditioned matrices both codes' errors scatter over two
orders of magnitude from one vector to the next at the same path (on
"integer_generator" and "sinh_overflow" from 6e-16 to 6e-14, SciPy's as much as
ours), so that a single problem compares luck, not the methods.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg
from jax.test_util import check_grads

import jexpm
from jexpm import _action
from tests.helpers import enable_x64, random_with_norm, rel_err
from tests.jexpm.matrices import CASES

U64 = 2.0**-53
F32_TOL = 5e-6


def _mp(x):
    return mpmath.mpc(complex(x).real, complex(x).imag)


def mp_action(a: np.ndarray, b: np.ndarray, dps: int) -> np.ndarray:
    """e^A B in mpmath at ``dps`` digits (product included), rounded to complex128."""
    with mpmath.workdps(dps):
        e = mpmath.expm(mpmath.matrix([[_mp(z) for z in row] for row in a]))
        y = e * mpmath.matrix([[_mp(z) for z in row] for row in b])
        return np.array([[complex(y[i, j]) for j in range(b.shape[1])] for i in range(len(a))])


def _member_errors(y, ref) -> np.ndarray:
    return np.array([rel_err(y[i], ref[i]) for i in range(len(ref))])


# --- theta_m, recomputed from the series -------------------------------------------


@functools.cache
def _mp_coefficients(m: int, terms: int = 400) -> list:
    """|f_k| of h_(m+1)(x) = -x + log T_m(x) (zero for k <= m), by the power-series
    logarithm of T_m itself (f = log g: k f_k g_0 = k g_k - sum_(j<k) j f_j g_(k-j)) in
    mpmath at 40 digits; theta_m by bisection on sum_k |f_k| x^(k-1) = tol."""
    with mpmath.workdps(40):
        g = [1 / mpmath.factorial(j) if j <= m else mpmath.mpf(0) for j in range(terms)]
        f = [mpmath.mpf(0)] * terms
        for k in range(1, terms):
            f[k] = g[k] - sum(j * f[j] * g[k - j] for j in range(max(1, k - m), k)) / k
        f[1] -= 1  # the -x of e^-x
        return [abs(f[k]) if k > m else mpmath.mpf(0) for k in range(terms)]


def _mp_theta(m: int, tol: float) -> float:
    c = _mp_coefficients(m)
    with mpmath.workdps(40):

        def ratio(x):
            # sum_k c[k + 1] x^k (mpmath's polyval changes its coefficient order
            # between releases)
            return mpmath.fsum(ck * x**k for k, ck in enumerate(c[1:]))

        lo, hi = mpmath.mpf(0), mpmath.mpf(64)
        for _ in range(70):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ratio(mid) <= tol else (lo, mid)
        return float(lo)


# [AH11] Table 3.1, as printed (two significant digits): m -> (theta double, single).
_TABLE_3_1 = {
    5: (2.4e-3, 1.3e-1),
    10: (1.4e-1, 1.0e0),
    15: (6.4e-1, 2.2e0),
    20: (1.4e0, 3.6e0),
    25: (2.4e0, 4.9e0),
    30: (3.5e0, 6.3e0),
    35: (4.7e0, 7.7e0),
    40: (6.0e0, 9.1e0),
    45: (7.2e0, 1.1e1),
    50: (8.5e0, 1.2e1),
    55: (9.9e0, 1.3e1),
}


@pytest.mark.parametrize("m", [1, 2, 5, 10, 20, 35, 55])
def test_theta_matches_an_independent_mpmath_series(m):
    for tol in (2.0**-53, 2.0**-24, 2.0**-8):
        assert _action.theta(tol)[m - 1] == pytest.approx(_mp_theta(m, tol), rel=1e-9)


def test_theta_reproduces_the_published_table():
    for m, (double, single) in _TABLE_3_1.items():
        for tol, printed in ((2.0**-53, double), (2.0**-24, single)):
            got = float(f"{_action.theta(tol)[m - 1]:.2g}")
            assert got == printed, (m, tol, got, printed)
    theta = _action.theta(2.0**-53)
    assert np.all(np.diff(theta) > 0)


# --- float64 accuracy: hard matrices, mpmath and SciPy --------------------------------

_TIMES = (1.0, 0.25, -1.0)


def _hard_groups() -> dict[tuple[int, bool], list[str]]:
    """Catalogue cases with ||A||_1 <= 2e4 by (n, complex): one batched call each."""
    groups: dict[tuple[int, bool], list[str]] = {}
    for name, case in CASES.items():
        if np.abs(case.a).sum(axis=0).max() <= 2e4:
            groups.setdefault((len(case.a), np.iscomplexobj(case.a)), []).append(name)
    return groups


_GROUPS = _hard_groups()


def _column_errors(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(y - ref).sum(axis=0) / np.abs(ref).sum(axis=0)


@pytest.mark.parametrize("key", sorted(_GROUPS), ids=lambda k: f"n{k[0]}{'c' if k[1] else ''}")
def test_float64_hard_matrices_within_10x_of_scipy(key):
    """Per matrix, the largest error over t in _TIMES and 6 random vectors is within
    10 x max(SciPy's largest on the same 18 problems, u). One batched call per size,
    whose members differ in t, order and steps."""
    n, complex_ = key
    rng = np.random.default_rng(n)
    members = [(name, t) for name in _GROUPS[key] for t in _TIMES]
    a = np.stack([CASES[name].a for name, _ in members])
    t = np.array([t for _, t in members])
    b = rng.standard_normal((len(members), n, 6))
    if complex_:
        b = b + 1j * rng.standard_normal(b.shape)
    with enable_x64():
        y, info = jexpm.expm_multiply(a, b, t=t, return_info=True)
        y = np.asarray(y)
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    for i, (name, ti) in enumerate(members):
        ref = mp_action(ti * a[i], b[i], CASES[name].dps)
        ref = ref if complex_ else ref.real
        if not np.all(np.isfinite(ref)) or np.abs(ref).max() > 1e300:
            continue  # e^(tA) B overflows
        scipy_y = scipy.sparse.linalg.expm_multiply(ti * a[i], b[i])
        ours.setdefault(name, []).extend(_column_errors(y[i], ref))
        theirs.setdefault(name, []).extend(_column_errors(scipy_y, ref))
        assert int(info.steps[i]) >= 1 or bool(info.formed[i])
    assert len(ours) == len(_GROUPS[key])
    for name in ours:
        mine, scipy_max = max(ours[name]), max(theirs[name])
        assert mine <= 10 * max(scipy_max, U64), f"{name}: {mine:.2e} > 10 x scipy {scipy_max:.2e}"


def test_float64_random_against_scipy_expm():
    """Flow-sized random matrices, per-member t, against scipy.linalg.expm(tA) @ B."""
    rng = np.random.default_rng(3)
    for n in (6, 24):
        a = (
            random_with_norm(rng, (6, n, n), 1.0)
            * np.array([0.1, 1, 3, 10, 30, 100])[:, None, None]
        )
        b = rng.standard_normal((6, n, 3))
        t = rng.uniform(-1, 1, 6)
        with enable_x64():
            y = np.asarray(jexpm.expm_multiply(a, b, t=t))
        ref = np.stack(
            [scipy.linalg.expm(ti * ai) @ bi for ai, bi, ti in zip(a, b, t, strict=True)]
        )
        assert np.max(_member_errors(y, ref)) <= 200 * U64


@pytest.mark.parametrize("n", [6, 12, 24, 48])
def test_float32_at_flow_sizes(n):
    """Norms up to 8 (a coupling's matrices have norm about 1). At norm 30 the error of
    the action reaches 1e-5 .. 5e-5 for n = 6 and 12 (docs/guides/action.md)."""
    rng = np.random.default_rng(n)
    norms = np.repeat([1e-3, 0.1, 1.0, 2.0, 4.0, 8.0], 4)
    a = random_with_norm(rng, (24, n, n), 1.0) * norms[:, None, None]
    b = rng.standard_normal((24, n))
    y = jexpm.expm_multiply(a.astype(np.float32), b.astype(np.float32))
    assert y.dtype == jnp.float32
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    ref = np.stack([scipy.linalg.expm(x) @ v for x, v in zip(a32, b32, strict=True)])
    errors = _member_errors(np.asarray(y)[..., None], ref[..., None])
    assert np.max(errors) <= F32_TOL, errors


# --- the selection: every branch --------------------------------------------------


def test_zero_and_scalar_matrices_take_one_term_and_differentiate_exactly():
    """A = c I shifts to X0 = 0. One (zero) term keeps the value e^c B and makes the
    derivative of the computed polynomial the true one, L(cI, E) B = e^c E B, in both
    modes: with no term the direction's part off the multiples of I was lost (found in
    a Glow whose couplings start at multiples of I)."""
    b = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    a = np.stack([np.zeros((3, 3)), 0.7 * np.eye(3)]).astype(np.float32)
    y, info = jexpm.expm_multiply(a, b.astype(np.float32), return_info=True)
    np.testing.assert_allclose(y, np.stack([b[0], np.exp(0.7) * b[1]]), rtol=1e-6)
    assert info.order.tolist() == [1, 1]
    assert info.steps.tolist() == [1, 1]
    assert info.matvecs.tolist() == [1, 1]
    rng = np.random.default_rng(4)
    e, g = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3))
    with jax.enable_x64(True):
        a64 = jnp.asarray(a, jnp.float64)

        def action(a):
            return jexpm.expm_multiply(a, jnp.asarray(b))

        scale = np.exp(np.asarray(a64[:, 0, 0]))  # e^c, c = 0 and float32's 0.7
        want = scale[:, None] * np.einsum("bij,bj->bi", e, b)
        np.testing.assert_allclose(jax.jvp(action, (a64,), (jnp.asarray(e),))[1], want, rtol=1e-14)
        grad = jax.vjp(action, a64)[1](jnp.asarray(g))[0]
        want_grad = scale[:, None, None] * g[:, :, None] * b[:, None, :]
        np.testing.assert_allclose(grad, want_grad, rtol=1e-14)


def test_orders_steps_and_early_termination_per_member():
    """One batch: small norms need no scaling, large ones several steps; orders differ
    per member; most sums end early, a degree-1 one cannot."""
    rng = np.random.default_rng(0)
    norms = np.array([1e-3, 0.5, 4.0, 60.0])
    a = random_with_norm(rng, (4, 8, 8), 1.0) * norms[:, None, None]
    nilpotent = 100 * np.triu(np.ones((8, 8)), 1) * (np.arange(8) == 0)[:, None]  # A^2 = 0
    a = np.concatenate([a, [nilpotent]])  # ||A||_1 = 100 > 63: the power norms, alpha = 0
    b = rng.standard_normal((5, 8))
    with enable_x64():
        y, info = jexpm.expm_multiply(a, b, return_info=True)
        single = [np.asarray(jexpm.expm_multiply(x, v)) for x, v in zip(a, b, strict=True)]
    order, steps, matvecs = (np.asarray(v) for v in info[:3])
    assert not np.any(np.asarray(info.formed))
    assert steps[0] == steps[1] == steps[2] == 1 and steps[3] > 1
    assert len(set(order.tolist())) == 5, order
    assert np.all(matvecs[2:4] < order[2:4] * steps[2:4])  # ended early
    assert order[4] == 1 and matvecs[4] == 1  # x + A x is exact, no early end possible
    for i in range(5):
        np.testing.assert_allclose(y[i], single[i], rtol=4 * U64, atol=0)
        ref = scipy.linalg.expm(a[i]) @ b[i]
        assert rel_err(y[i][:, None], ref[:, None]) <= 100 * U64


def test_power_norms_are_spent_only_where_they_pay():
    """||X^p||^(1/p) costs three n x n products, 3 n / k products with the block: not
    spent at a small norm and one column, spent at the same norm with many columns; at a
    large norm they cut the steps of a non-normal matrix far below ||A||_1 / theta."""
    rng = np.random.default_rng(1)
    with enable_x64():
        small = random_with_norm(rng, (12, 12), 3.0)
        assert int(jexpm.expm_multiply(small, np.ones(12), return_info=True)[1][3]) == 0
        wide = jexpm.expm_multiply(small, np.ones((12, 64)), return_info=True)[1]
        assert int(wide.matrix_products) == 3
        nonnormal = np.triu(rng.standard_normal((12, 12)), 1) * 40.0
        _, info = jexpm.expm_multiply(nonnormal, np.ones(12), return_info=True)
        assert int(info.matrix_products) == 3
        plain = math.ceil(np.abs(nonnormal).sum(axis=0).max() / _action.theta(U64)[-1])
        assert int(info.steps) < plain / 4


def test_size_one_empty_batch_no_columns_and_n_zero():
    with enable_x64():
        y = jexpm.expm_multiply(np.array([[[2.0]], [[-3.0]]]), np.array([[1.5], [2.0]]))
        np.testing.assert_allclose(y, [[1.5 * np.exp(2.0)], [2.0 * np.exp(-3.0)]], rtol=4 * U64)
    assert jexpm.expm_multiply(np.zeros((0, 3, 3)), np.zeros((0, 3))).shape == (0, 3)
    assert jexpm.expm_multiply(np.eye(3), np.zeros((3, 0))).shape == (3, 0)
    assert jexpm.expm_multiply(np.zeros((2, 0, 0)), np.zeros((2, 0))).shape == (2, 0)


def test_members_beyond_the_step_limit_are_formed():
    """A rotation generator of norm 1e7 (more than MAX_STEPS steps) beside one of norm 1:
    formed, finite and equal to method="expm" (which forms every member)."""
    a = np.array([[[0.0, 1.0], [-1.0, 0.0]]]) * np.array([1.0, 1e7])[:, None, None]
    b = np.ones((2, 2))
    with enable_x64():
        y, info = jexpm.expm_multiply(a, b, return_info=True)
        z, z_info = jexpm.expm_multiply(a, b, method="expm", return_info=True)
    assert np.all(np.isfinite(y))
    assert bool(info.formed[1]) and bool(np.all(z_info.formed))
    np.testing.assert_array_equal(y[1], z[1])
    np.testing.assert_allclose(z[0], y[0], rtol=1e-14)


def test_expm_method_matches_and_reports_its_products():
    rng = np.random.default_rng(2)
    a = random_with_norm(rng, (3, 5, 5), 3.0, np.float32)
    b = rng.standard_normal((3, 5, 2)).astype(np.float32)
    y, info = jexpm.expm_multiply(a, b, method="expm", return_info=True)
    np.testing.assert_allclose(y, jexpm.expm(a) @ b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, jexpm.expm_multiply(a, b), rtol=2e-5, atol=2e-5)
    assert np.all(np.asarray(info.matvecs) == 2)
    assert np.all(np.asarray(info.matrix_products) == jexpm.expm(a, return_info=True)[1].products)


# --- derivatives --------------------------------------------------------------------


def _pair(n, norm, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = random_with_norm(rng, (2, n, n), norm, dtype)
    b = rng.standard_normal((2, n, 2)).astype(dtype)
    return a, b, np.array([0.7, -0.4])


def test_derivatives_match_finite_differences():
    """In a, b and t, forward and reverse, for a member without and one with scaling."""
    a, b, t = _pair(4, 1.0, 0)
    a = a * np.array([0.3, 80.0])[:, None, None]
    with enable_x64():
        assert jexpm.expm_multiply(a, b, t=t, return_info=True)[1].steps.tolist()[1] > 1

        def f(a, b, t):
            return jexpm.expm_multiply(a, b, t=t)

        check_grads(f, (a, b, t), order=1, modes=["fwd", "rev"], rtol=1e-6)


def test_reverse_mode_through_recomputed_checkpoints():
    """More steps than checkpoints (41 > 32): reverse mode recomputes states."""
    a = np.array([[0.0, 400.0], [-400.0, 0.0]])
    b = np.array([1.0, 2.0])
    with enable_x64():
        info = jexpm.expm_multiply(a, b, return_info=True)[1]
        assert int(info.steps) > _action.CHECKPOINTS and not bool(info.formed)
        check_grads(lambda a, b: jexpm.expm_multiply(a, b), (a, b), 1, ["rev"], rtol=1e-6)


def test_complex_derivatives_match_finite_differences():
    rng = np.random.default_rng(4)
    a = random_with_norm(rng, (3, 3), 2.0, np.complex128)
    b = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    with enable_x64():
        check_grads(lambda a, b: jexpm.expm_multiply(a, b), (a, b), 1, ["fwd", "rev"], rtol=1e-6)


def test_derivatives_agree_with_expm_frechet():
    """d/dA e^(tA) b along E is L(tA, tE) b, in both modes."""
    a, b, t = _pair(4, 6.0, 5)
    e = np.random.default_rng(6).standard_normal(a.shape)
    g = np.random.default_rng(7).standard_normal(b.shape)
    with enable_x64():
        frechet = jexpm.expm_frechet(t[:, None, None] * a, t[:, None, None] * e, compute_expm=False)
        expected = np.asarray(frechet @ b)

        def f(a):
            return jexpm.expm_multiply(a, b, t=t)

        _, tangent = jax.jvp(f, (a,), (e,))
        _, pullback = jax.vjp(f, a)
        (cotangent,) = pullback(g)
        tangent, cotangent = np.asarray(tangent), np.asarray(cotangent)
    np.testing.assert_allclose(tangent, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(np.sum(cotangent * e), np.sum(g * expected), rtol=1e-12)


def test_derivative_in_t_is_a_times_the_action():
    a, b, t = _pair(4, 5.0, 8)
    with enable_x64():
        y, dy = jax.jvp(lambda t: jexpm.expm_multiply(a, b, t=t), (t,), (np.ones(2),))
        y, dy = np.asarray(y), np.asarray(dy)
    np.testing.assert_allclose(dy, a @ y, rtol=1e-12, atol=1e-12 * np.abs(dy).max())


def test_second_derivatives_forward_over_either_mode():
    """jax.hessian (forward over reverse), jacfwd(jacfwd) and Hessian-vector products
    against finite differences of the exact gradient, for a member with scaling steps."""
    a, b, t = _pair(3, 0.1, 10)
    g = np.random.default_rng(12).standard_normal(a.shape)
    a = (
        a + (g - np.swapaxes(g, -1, -2)) * np.array([0.2, 20.0])[:, None, None]
    )  # e^(tA) ~ orthogonal
    v = np.random.default_rng(11).standard_normal(a.shape)
    with enable_x64():
        assert jexpm.expm_multiply(a, b, t=t, return_info=True)[1].steps.tolist()[1] > 1

        def loss(a):
            return jnp.sum(jnp.sin(jexpm.expm_multiply(a, b, t=t)))

        grad = jax.grad(loss)
        # Jitted: one program per derivative (an eager call compiles every control-flow
        # primitive of the nested derivative on its own), and one gradient program for
        # both points of the differences.
        jit_grad = jax.jit(grad)
        h = 1e-5
        expected = (np.asarray(jit_grad(a + h * v)) - np.asarray(jit_grad(a - h * v))) / (2 * h)
        hvp = np.asarray(jax.jit(lambda a, v: jax.jvp(grad, (a,), (v,))[1])(a, v))
        hessian = np.asarray(jax.jit(jax.hessian(loss))(a))
        forward = np.asarray(jax.jit(jax.jacfwd(jax.jacfwd(loss)))(a))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(hvp, expected, rtol=1e-6, atol=1e-6 * scale)
    contracted = np.tensordot(hessian, v, axes=v.ndim)
    np.testing.assert_allclose(contracted, expected, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(forward, hessian, rtol=1e-9, atol=1e-9 * np.abs(hessian).max())
    with enable_x64(), pytest.raises(ValueError, match="Reverse-mode differentiation"):
        jax.grad(lambda a: jnp.sum(grad(a)))(a)


def test_transforms_compose():
    a, b, t = _pair(4, 3.0, 9, np.float32)

    def loss(a, b, t):
        return jnp.sum(jexpm.expm_multiply(a, b, t=t) ** 2)

    batched = jax.grad(loss, argnums=(0, 1, 2))(a, b, t)
    mapped = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2))))(a, b, t)
    for x, y in zip(batched, mapped, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)

    def single(a):
        return jexpm.expm_multiply(a, b[0], t=t[0])

    np.testing.assert_allclose(
        jax.jacfwd(single)(a[0]), jax.jacrev(single)(a[0]), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        jax.vmap(lambda a, b: jexpm.expm_multiply(a, b))(a, b),
        jexpm.expm_multiply(a, b),
        rtol=1e-6,
        atol=1e-6,
    )


def test_gradient_of_a_nan_member_is_nan_and_others_unaffected():
    a, b, _ = _pair(4, 1.0, 10)
    bad = a.copy()
    bad[1, 0, 0] = np.nan
    with enable_x64():
        g = jax.grad(lambda a: jnp.sum(jexpm.expm_multiply(a, b)))(bad)
        g_ok = jax.grad(lambda a: jnp.sum(jexpm.expm_multiply(a, b)))(a)
    assert np.all(np.isnan(g[1]))
    np.testing.assert_array_equal(g[0], g_ok[0])


# --- API: shapes, broadcasting, dtypes, bad input, tracing ----------------------------


def test_vectors_and_blocks_and_broadcasting():
    rng = np.random.default_rng(11)
    a = random_with_norm(rng, (3, 1, 4, 4), 1.0, np.float32)
    v = rng.standard_normal((1, 2, 4)).astype(np.float32)  # b.ndim == a.ndim - 1: vectors
    y = jexpm.expm_multiply(a, v, t=np.array([0.5, 1.0], np.float32))
    assert y.shape == (3, 2, 4)
    e = np.asarray(jexpm.expm(a * np.array([0.5, 1.0], np.float32)[:, None, None]))
    np.testing.assert_allclose(y, np.einsum("...ij,...j->...i", e, v), rtol=2e-5, atol=2e-6)
    block = jexpm.expm_multiply(a[0, 0], v[0].T)  # b.ndim == a.ndim: an n x k block
    assert block.shape == (4, 2)
    np.testing.assert_allclose(block, e[0, 1] @ v[0].T, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [
        ("float32", 1e-5),
        ("complex64", 1e-5),
        ("bfloat16", 2e-2),
        ("float16", 4e-3),
        ("int32", 1e-5),
    ],
)
def test_dtypes(dtype, rtol):
    rng = np.random.default_rng(12)
    a = np.round(random_with_norm(rng, (2, 6, 6), 2.0) * 4) / 4
    b = np.round(rng.standard_normal((2, 6)) * 4) / 4
    if dtype == "complex64":
        a = a + 0.5j * np.eye(6)
    if dtype == "int32":
        a, b = np.round(4 * a), np.round(4 * b)
    a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    y = jexpm.expm_multiply(a, b)
    expected = {"int32": jnp.float32}.get(dtype, jnp.dtype(dtype))
    assert y.dtype == expected
    a, b = (np.asarray(x).astype(np.complex128) for x in (a, b))  # the rounded input
    ref = np.stack([scipy.linalg.expm(x) @ v for x, v in zip(a, b, strict=True)])
    err = np.abs(np.asarray(y, np.complex128) - ref).max() / np.abs(ref).max()
    assert err <= rtol


def test_bad_shapes_raise_naming_them():
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4,\)"):
        jexpm.expm_multiply(np.eye(3), np.ones(4))
    with pytest.raises(ValueError, match=r"\(2, 3, 3\).*\(2, 4, 1\)"):
        jexpm.expm_multiply(np.ones((2, 3, 3)), np.ones((2, 4, 1)))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        jexpm.expm_multiply(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="do not broadcast"):
        jexpm.expm_multiply(np.ones((2, 3, 3)), np.ones((3, 3)), t=np.ones(5))
    with pytest.raises(ValueError, match="method"):
        jexpm.expm_multiply(np.eye(2), np.ones(2), method="pade")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tol"):
        jexpm.expm_multiply(np.eye(2), np.ones(2), tol=2.0)


@pytest.mark.parametrize("where", ["a", "b", "t"])
def test_non_finite_members_are_nan_and_others_unaffected(where):
    rng = np.random.default_rng(13)
    a = random_with_norm(rng, (3, 4, 4), 1.0, np.float32)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    t = np.ones(3, np.float32)
    clean = np.asarray(jexpm.expm_multiply(a, b, t=t))
    {"a": a[1], "b": b[1], "t": t[1:2]}[where][0] = np.inf if where == "t" else np.nan
    y = np.asarray(jexpm.expm_multiply(a, b, t=t))
    assert np.all(np.isnan(y[1]))
    np.testing.assert_array_equal(y[[0, 2]], clean[[0, 2]])


def test_no_retrace_for_new_values():
    rng = np.random.default_rng(14)
    a = random_with_norm(rng, (4, 5, 5), 1.0, np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    f = jax.jit(lambda a, b: jexpm.expm_multiply(a, b))
    traces = f._cache_size()
    f(a, b)
    f(40 * a, b)
    f(np.zeros_like(a), -b)
    assert f._cache_size() == traces + 1


# --- stiff matrices: members formed instead of stepped --------------------------------


def _heat(n: int) -> tuple[np.ndarray, np.ndarray, mpmath.mpf]:
    """The second-difference Laplacian on n interior points of [0, 1] (exact in float64),
    b = sin(pi x), an eigenvector of it, and its eigenvalue -4 (n+1)^2 sin^2(pi h / 2)."""
    h = 1 / (n + 1)
    lap = np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    lam = -4 * (n + 1) ** 2 * mpmath.sin(mpmath.pi / (2 * (n + 1))) ** 2
    return lap * (n + 1) ** 2, np.sin(np.pi * np.arange(1, n + 1) * h), lam


def _heat_exact(n: int, lam, t: float) -> np.ndarray:
    with mpmath.workdps(30):
        return np.array(
            [
                float(mpmath.exp(t * lam) * mpmath.sin(mpmath.pi * i / (n + 1)))
                for i in range(1, n + 1)
            ]
        )


@pytest.mark.parametrize(
    ("n", "t", "formed"), [(64, 1.0, False), (256, 0.1, False), (256, 1.0, True)]
)
def test_heat_equation_within_10x_of_scipy(n, t, formed):
    """The 1-D heat equation, ||tL||_1 = 1.7e4 .. 2.6e5 (up to 850, 1339 and 13300 steps;
    the last was NaN beyond the former 65536-step limit, now formed): within 10 x SciPy's
    error against the exact e^(t lambda) b. SciPy takes 26 s on the last."""
    lap, b, lam = _heat(n)
    exact = _heat_exact(n, lam, t)
    with enable_x64():
        y, info = jexpm.expm_multiply(lap, b, t=t, return_info=True)
    scipy_y = scipy.sparse.linalg.expm_multiply(t * scipy.sparse.csr_matrix(lap), b)
    ours, theirs = rel_err(y[:, None], exact[:, None]), rel_err(scipy_y[:, None], exact[:, None])
    assert bool(info.formed) == formed
    assert ours <= 10 * max(theirs, U64), (ours, theirs)


def test_heat_equation_beyond_scipy_reach():
    """t = 10 (||tL||_1 = 2.6e6; SciPy takes minutes): the answer e^(10 lambda) b ~ 1e-43
    b, to a few u ||tL||_1 (the condition of the problem; SciPy's is 0.2 u ||tL||_1 at
    n = 64)."""
    n, t = 256, 10.0
    lap, b, lam = _heat(n)
    with enable_x64():
        y = np.asarray(jexpm.expm_multiply(lap, b, t=t))
    bound = 3 * U64 * t * np.abs(lap).sum(axis=0).max()
    assert rel_err(y[:, None], _heat_exact(n, lam, t)[:, None]) <= bound


def test_norm_1e8_against_the_eigendecomposition():
    """A symmetric matrix with eigenvalues from -1e8 to 1, one batch with a mild member
    (stepped) and vectors and a block: the stiff member formed, no NaN, each against
    Q e^Lambda Q^T B from mpmath's eigendecomposition of the rounded matrix."""
    rng = np.random.default_rng(21)
    n = 24
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = -np.logspace(8, -2, n) + np.linspace(0, 1.0, n)
    stiff = (q * lam) @ q.T
    stiff = (stiff + stiff.T) / 2
    mild = random_with_norm(rng, (n, n), 0.05)
    a = np.stack([stiff, mild])
    b = rng.standard_normal((2, n, 3))
    with enable_x64():
        y, info = jexpm.expm_multiply(a, b, return_info=True)
    y = np.asarray(y)
    assert np.asarray(info.formed).tolist() == [True, False]
    assert np.abs(a[0]).sum(axis=0).max() > 1e8
    with mpmath.workdps(40):
        e, v = mpmath.eigsy(mpmath.matrix(a[0].tolist()))
        w = v * mpmath.diag([mpmath.exp(x) for x in e]) * v.T * mpmath.matrix(b[0].tolist())
        ref = np.array(w.tolist(), dtype=float)
    # e^A B has the size of e^1 B; its condition is about u ||A||_1 (4e-8).
    assert rel_err(y[0], ref) <= 3 * U64 * np.abs(a[0]).sum(axis=0).max()
    np.testing.assert_allclose(y[1], scipy.linalg.expm(a[1]) @ b[1], rtol=1e-13, atol=1e-13)


def test_formed_members_are_differentiated_as_expm(monkeypatch):
    """A batch with a formed (stiff) member and a stepped one: jit, vmap, jvp and grad,
    each the derivative of what was computed (finite differences; expm's Frechet). The
    step bound is lowered to 8 so that a norm finite differences can resolve (about
    1e3, 100 steps) is formed."""
    monkeypatch.setattr(_action, "MAX_STEPS", 8)
    jax.clear_caches()
    rng = np.random.default_rng(22)
    n = 6
    g = rng.standard_normal((n, n))
    stiff = -(g @ g.T) * 200.0  # ||tA||_1 ~ 1e3, k = 1: about 100 steps, formed
    mild = random_with_norm(rng, (n, n), 0.01)
    a = np.stack([stiff, mild])
    b = rng.standard_normal((2, n))
    t = np.array([0.5, 0.7])
    try:
        with enable_x64():
            _, info = jexpm.expm_multiply(a, b, t=t, return_info=True)
            assert np.asarray(info.formed).tolist() == [True, False]

            def f(a, b, t):
                return jexpm.expm_multiply(a, b, t=t)

            check_grads(f, (a, b, t), order=1, modes=["fwd", "rev"], rtol=1e-6, eps=1e-7)
            direct = np.asarray(jax.jit(f)(a, b, t))
            mapped = np.asarray(jax.vmap(f)(a, b, t))
            np.testing.assert_allclose(mapped, direct, rtol=1e-12, atol=1e-300)
            e = rng.standard_normal(a.shape)
            _, tangent = jax.jvp(lambda a: f(a, b, t), (a,), (e,))
            frechet = jexpm.expm_frechet(t[0] * a[0], t[0] * e[0], compute_expm=False) @ b[0]
            scale = np.abs(frechet).max()
            np.testing.assert_allclose(tangent[0], frechet, rtol=1e-10, atol=1e-10 * scale)
            grads = jax.vmap(jax.grad(lambda a, b, t: jnp.sum(f(a, b, t) ** 2)))(a, b, t)
            whole = jax.grad(lambda a: jnp.sum(f(a, b, t) ** 2))(a)
            np.testing.assert_allclose(grads, whole, rtol=1e-10, atol=1e-10 * np.abs(whole).max())
    finally:
        jax.clear_caches()


def test_formed_member_at_the_real_bound_is_expm_times_b_with_its_derivatives():
    """||tA||_1 = 2e5 (beyond 4096 steps): value, jvp and gradient equal those of
    method="expm" (the same computation), for a batch with a stepped member."""
    rng = np.random.default_rng(23)
    n = 8
    g = rng.standard_normal((n, n))
    a = np.stack([-(g @ g.T) / np.abs(g @ g.T).sum(axis=0).max() * 2e5, 0.01 * g])
    b = rng.standard_normal((2, n))
    e = rng.standard_normal(a.shape)
    with enable_x64():
        y, info = jexpm.expm_multiply(a, b, return_info=True)
        assert np.asarray(info.formed).tolist() == [True, False]

        def loss(a, method):
            return jnp.sum(jnp.sin(jexpm.expm_multiply(a, b, method=method)))

        _, tangent = jax.jvp(lambda a: jexpm.expm_multiply(a, b), (a,), (e,))
        _, expected = jax.jvp(lambda a: jexpm.expm_multiply(a, b, method="expm"), (a,), (e,))
        grad, grad_expm = jax.grad(loss)(a, "action"), jax.grad(loss)(a, "expm")
        z = jexpm.expm_multiply(a, b, method="expm")
    np.testing.assert_allclose(y[0], z[0], rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(tangent[0], expected[0], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad[0], grad_expm[0], rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(grad))


def test_complex_i_s_within_10x_of_scipy_per_vector():
    """i S with S real symmetric (the unitary evolutions of quantum dynamics), at norms
    where the power norms' bound would halve the steps: each vector's error within 10 x
    SciPy's, against the exact Q e^(i t Lambda) Q^T b (mpmath's eigendecomposition).
    Without [AH11] (3.13) these were 5-9 x at ||S||_1 = 30 and n = 16."""
    rng = np.random.default_rng(2)
    for n in (16, 32):
        g = rng.standard_normal((n, n))
        s = (g + g.T) / 2
        s = s / np.abs(s).sum(axis=0).max()
        with mpmath.workdps(32):
            e, v = mpmath.eigsy(mpmath.matrix(s.tolist()))
        b = rng.standard_normal((n, 6)) + 1j * rng.standard_normal((n, 6))
        for norm in (10.0, 30.0, 100.0):
            a = 1j * norm * s
            with mpmath.workdps(32):
                d = mpmath.diag([mpmath.exp(1j * norm * x) for x in e])
                bm = mpmath.matrix([[mpmath.mpc(z.real, z.imag) for z in row] for row in b])
                w = v * d * (v.T * bm)
                ref = np.array([[complex(w[i, j]) for j in range(6)] for i in range(n)])
            with enable_x64():
                ours = np.stack(
                    [np.asarray(jexpm.expm_multiply(a, b[:, j])) for j in range(6)], axis=1
                )
            theirs = np.stack([scipy.sparse.linalg.expm_multiply(a, b[:, j]) for j in range(6)], 1)
            mine, scipy_err = _column_errors(ours, ref), _column_errors(theirs, ref)
            assert np.all(mine <= 10 * np.maximum(scipy_err, U64)), (n, norm, mine / scipy_err)


def test_power_norms_only_above_the_bound_of_3_13():
    """[AH11] (3.13): below ||X0||_1 = 2 l p_max (p_max + 3) theta_55 / (55 k) (63 for one
    vector) the plain bound is used even where the power norms are cheap, as in SciPy:
    on i S at norm 30 (n = 16) that is 4 steps where the powers' bound gives 2, whose
    larger steps' Taylor sums cancel more (5-9 x SciPy's error per vector)."""
    rng = np.random.default_rng(2)
    g = rng.standard_normal((16, 16))
    s = (g + g.T) / 2
    x0 = 30j * s / np.abs(s).sum(axis=0).max()
    with enable_x64():
        x0 = x0 - np.trace(x0) / 16 * np.eye(16)
        one, _ = _action.select(jnp.asarray(x0), 1, U64, jnp.matmul)
        many, spent = _action.select(jnp.asarray(x0), 8, U64, jnp.matmul)
    assert (int(one.order), int(one.steps)) == (47, 4)
    assert int(spent) == 3 and int(many.steps) == 2  # 8 columns: 30 > 63 / 8
