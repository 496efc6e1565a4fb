"""Derivatives of jexpm in both modes, and the Frechet derivative expm_frechet.

The gradient of sum(G * expm(A)) is the Frechet derivative L(A^T, G), which
scipy.linalg.expm_frechet computes independently (Al-Mohy and Higham 2009).
Compilation dominates the runtime here: tests share a few jitted functions and shapes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from jax.test_util import check_grads

import jexpm
from tests.helpers import EPS, random_with_norm, rel_err

METHODS = ("opt15", "ps", "baseline")
FUNCS = {"expm": jexpm.expm, "phi1": jexpm.phi1}

# Relative (normwise, 1-norm) tolerance of gradients against scipy's Frechet derivative.
GRAD_RTOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 1e-4}
GRAD_NS = (4, 12, 24, 48)
GRAD_NORMS = (0.1, 2.0, 30.0)
N = 12  # the shape most tests share, so that they share compiled functions
BATCH_NORMS = (0.01, 0.5, 4.0, 30.0)


def _ctx(dtype):
    """x64 switched on only for 64-bit tests."""
    return jax.enable_x64(np.dtype(dtype) in (np.dtype("float64"), np.dtype("complex128")))


def _loss(a, g, method):
    return jnp.sum(g * jexpm.expm(a, method=method))


@functools.cache
def _grad_fn(method):
    """jit(grad) of A -> sum(G * expm(A)); one function per method, so compiles are shared."""
    return jax.jit(jax.grad(functools.partial(_loss, method=method)))


def _reference_grad(a, g):
    """d/dA sum(G * exp(A)) = L(A^T, G), from scipy in float64."""
    a, g = np.asarray(a, np.float64), np.asarray(g, np.float64)
    return sl.expm_frechet(a.T, g, compute_expm=False)


def _batch(seed=0, n=N):
    rng = np.random.default_rng(seed)
    a = np.stack([random_with_norm(rng, (n, n), x) for x in BATCH_NORMS])
    g = rng.standard_normal(a.shape)
    return a, g


# ---------------------------------------------------------------------------------
# Gradients against scipy.linalg.expm_frechet


def _check_against_scipy(method, dtype, n, norms):
    rng = np.random.default_rng(n)
    errors = {}
    for norm in norms:
        a = random_with_norm(rng, (n, n), norm).astype(dtype)
        g = rng.standard_normal((n, n)).astype(dtype)
        with _ctx(dtype):
            got = _grad_fn(method)(a, g)
        assert got.dtype == np.dtype(dtype)
        errors[norm] = rel_err(got, _reference_grad(a, g))
    bad = {norm: f"{err:.1e}" for norm, err in errors.items() if err > GRAD_RTOL[np.dtype(dtype)]}
    assert not bad, f"relative errors above {GRAD_RTOL[np.dtype(dtype)]:g} at norms: {bad}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", GRAD_NS)
def test_grad_matches_scipy_frechet_float64(method, n):
    _check_against_scipy(method, "float64", n, GRAD_NORMS)


# float32 on fewer sizes: each (method, n) is one more compilation.
@pytest.mark.parametrize(("method", "n"), [(m, N) for m in METHODS] + [("opt15", 48)])
def test_grad_matches_scipy_frechet_float32(method, n):
    _check_against_scipy(method, "float32", n, GRAD_NORMS)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_grad_small_norms_is_derivative_of_the_approximant(method, dtype):
    """Norms where low orders (for the baseline: few or no Taylor terms) are chosen.

    The gradient is the exact derivative of the approximant the forward computed (the
    VJP's contract). For order m (baseline: m terms) that derivative differs from the
    exact Frechet derivative by about ||A||^m / m!, which tol does not bound for small
    m: for float64 at ||A|| = 1e-8 the order-1 gradient is off by ~1e-8. Check both
    halves: agreement with the derivative of T_m itself, and the truncation bound.
    """
    rng = np.random.default_rng(7)
    for norm in (1e-20, 1e-12, 1e-9, 1e-8, 3e-8, 1e-6, 1e-5, 1e-4, 1e-3):
        a = random_with_norm(rng, (N, N), norm).astype(dtype)
        g = rng.standard_normal((N, N)).astype(dtype)
        with _ctx(dtype):
            got = np.asarray(_grad_fn(method)(a, g))
            _, info = jexpm.expm(a, method=method, return_info=True)
        m = int(info.order)
        # The Taylor polynomial of degree m (this is what every method computes at
        # these norms, s = 0), differentiated exactly: L_Tm(A^T, G).
        at = a.T.astype(np.float64)
        powers = [np.linalg.matrix_power(at, k) for k in range(m)]
        taylor_grad = sum(
            powers[i] @ g @ powers[k - 1 - i] / math.factorial(k)
            for k in range(1, m + 1)
            for i in range(k)
        )
        assert int(info.squarings) == 0
        rtol = 1e3 * EPS[np.dtype(dtype)]
        if m == 0:
            np.testing.assert_array_equal(got, 0)  # baseline summed no term
        else:
            assert rel_err(got, taylor_grad) <= rtol, (norm, m)
        truncation = 4 * norm**m / math.factorial(m) + rtol
        assert rel_err(got, _reference_grad(a, g)) <= truncation, (norm, m)


# ---------------------------------------------------------------------------------
# check_grads: first and second order (grad of grad goes through the block rule)


def _lowrank_args(dtype, rng):
    u = rng.standard_normal((5, 2)).astype(dtype)
    v = rng.standard_normal((2, 5)).astype(dtype)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        u = u + 1j * rng.standard_normal((5, 2))
        v = v + 1j * rng.standard_normal((2, 5))
    return u, v


CHECK_CASES = [
    # (function, method, dtype, order); order 2 includes the first-order check. Each
    # case costs several compilations, so the set is chosen to cover each family (exp,
    # phi1), real and complex, first and second order, and each derivative rule once:
    # the block rule behind second order is shared by all methods; ps is checked at
    # first order against scipy in test_grad_matches_scipy_frechet_*, and opt15's second
    # order against finite differences in test_hessian_reverse_over_reverse.
    ("expm", "opt15", "float64", 2),
    ("expm", "baseline", "complex128", 2),
    ("phi1", "baseline", "float64", 1),
    ("phi1", "baseline", "complex128", 2),
    ("lowrank", "opt15", "float64", 1),  # phi1 of opt15 inside
    ("lowrank", "baseline", "complex128", 1),
]


@pytest.mark.parametrize(("name", "method", "dtype", "order"), CHECK_CASES)
def test_check_grads(name, method, dtype, order):
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        if name == "lowrank":
            args = _lowrank_args(dtype, rng)
            fn = functools.partial(jexpm.expm_lowrank, method=method)
        else:
            # Norm 4 needs squarings with every method, so their derivative is checked too.
            args = (random_with_norm(rng, (4, 4), 4.0, dtype),)
            fn = functools.partial(FUNCS[name], method=method)
        check_grads(fn, args, order=order, modes=["fwd", "rev"])


# ---------------------------------------------------------------------------------
# Gradients under jit and vmap, and of batched calls


def _per_slice_grads(method, a, g):
    return np.stack([np.asarray(_grad_fn(method)(a[i], g[i])) for i in range(a.shape[0])])


def _assert_close_to_slices(got, want, what):
    # Alone, a member may take a lower order than the batch: equal to rounding.
    for i in range(want.shape[0]):
        err = rel_err(got[i], want[i])
        assert err <= 64 * EPS[np.dtype("float64")], (what, i, err)


# opt15 through every composition; the baseline too for the batched rules, because its
# derivative replays a per-member number of Taylor terms (the compositions themselves are
# method-independent plumbing, and each one is a compilation).
@pytest.mark.parametrize("method", ["opt15", "baseline"])
def test_grad_under_transforms(method):
    a, g = _batch(seed=2)
    loss = functools.partial(_loss, method=method)
    with jax.enable_x64(True):
        want = _per_slice_grads(method, a, g)  # jit(grad), slice by slice
        results = {
            "vmap(grad)": jax.vmap(jax.grad(loss))(a, g),
            "grad(batched)": jax.grad(loss)(a, g),
        }
        if method == "opt15":
            results["grad(vmap)"] = jax.grad(lambda a: jnp.sum(jax.vmap(loss)(a, g)))(a)
            results["jit(vmap(grad))"] = jax.jit(jax.vmap(jax.grad(loss)))(a, g)
    for what, got in results.items():
        got = np.asarray(got)
        assert got.shape == a.shape, what
        _assert_close_to_slices(got, want, what)
    # vmap runs the batched implementation: the same numbers as the batched call.
    np.testing.assert_array_equal(results["vmap(grad)"], results["grad(batched)"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_grad_nonfinite_input_gives_nan(method, bad):
    a, g = _batch(seed=3)
    a[1, 0, 5] = bad
    with jax.enable_x64(True):
        alone = np.asarray(_grad_fn(method)(a[1], g[1]))
    assert np.all(np.isnan(alone))


def test_grad_nonfinite_member_leaves_others():
    a, g = _batch(seed=3)
    a[1, 0, 5] = np.nan
    with jax.enable_x64(True):
        batched = np.asarray(jax.grad(functools.partial(_loss, method="opt15"))(a, g))
        want = _per_slice_grads("opt15", a[[0, 2, 3]], g[[0, 2, 3]])
    assert np.all(np.isnan(batched[1]))
    _assert_close_to_slices(batched[[0, 2, 3]], want, "others")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_grad_at_zero(method, dtype):
    """d/dA sum(G * exp(A)) at A = 0 is L(0, G) = G for opt15 and ps (order 1, I + A).

    The baseline, faithful to the published loop, adds no Taylor term when
    ||A|| <= tol, so its approximant is the constant I and its gradient is zero.
    """
    g = np.random.default_rng(4).standard_normal((N, N)).astype(dtype)
    with _ctx(dtype):
        got = np.asarray(_grad_fn(method)(np.zeros((N, N), dtype), g))
    assert np.all(np.isfinite(got))
    want = np.zeros_like(g) if method == "baseline" else g
    np.testing.assert_allclose(got, want, rtol=4 * EPS[np.dtype(dtype)], atol=0)


# ---------------------------------------------------------------------------------
# expm_frechet


@pytest.mark.parametrize("method", METHODS)
def test_frechet_matches_scipy(method):
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        for norm in GRAD_NORMS:
            a = random_with_norm(rng, (N, N), norm)
            e = rng.standard_normal((N, N))
            x, lx = jexpm.expm_frechet(a, e, method=method)
            x_ref, l_ref = sl.expm_frechet(a, e)
            assert rel_err(x, x_ref) <= GRAD_RTOL[np.dtype("float64")], norm
            assert rel_err(lx, l_ref) <= GRAD_RTOL[np.dtype("float64")], norm
            # L(A, E) is the gradient at A^T with G = E (up to rounding: ||A^T||_1 may
            # select another order than ||A||_1).
            assert rel_err(_grad_fn(method)(a.T, e), lx) <= 64 * EPS[np.dtype("float64")]


def test_frechet_identities():
    """L(A, A) = A exp(A) = exp(A) A, and L is linear in E."""
    rng = np.random.default_rng(6)
    a = random_with_norm(rng, (N, N), 3.0)
    e = rng.standard_normal((N, N))
    with jax.enable_x64(True):
        x, l_aa = jexpm.expm_frechet(a, a, method="opt15")
        assert rel_err(l_aa, a @ np.asarray(x)) <= 100 * EPS[np.dtype("float64")]
        assert rel_err(l_aa, np.asarray(x) @ a) <= 100 * EPS[np.dtype("float64")]
        _, l_e = jexpm.expm_frechet(a, e, method="opt15")
        _, l_sum = jexpm.expm_frechet(a, 2.0 * e - a, method="opt15")
    assert (
        rel_err(l_sum, 2.0 * np.asarray(l_e) - np.asarray(l_aa)) <= 100 * EPS[np.dtype("float64")]
    )


def test_frechet_batched_and_vmap():
    a, e = _batch(seed=7)
    with jax.enable_x64(True):
        x, lx = jexpm.expm_frechet(a, e)
        for i in range(a.shape[0]):
            x_ref, l_ref = sl.expm_frechet(a[i], e[i])
            assert rel_err(x[i], x_ref) <= GRAD_RTOL[np.dtype("float64")], i
            assert rel_err(lx[i], l_ref) <= GRAD_RTOL[np.dtype("float64")], i
        vx, vl = jax.vmap(jexpm.expm_frechet)(a, e)
        # An unbatched direction next to a batched matrix; compute_expm=False.
        shared = jax.vmap(
            functools.partial(jexpm.expm_frechet, compute_expm=False), in_axes=(0, None)
        )(a, e[0])
        _, broadcast = jexpm.expm_frechet(a, np.broadcast_to(e[0], a.shape))
    np.testing.assert_array_equal(vx, x)
    np.testing.assert_array_equal(vl, lx)
    assert isinstance(shared, jax.Array)
    np.testing.assert_array_equal(shared, broadcast)


def test_frechet_nan_input():
    a, e = _batch(seed=8)
    a[2, 3, 3] = np.inf
    with jax.enable_x64(True):
        x, lx = jexpm.expm_frechet(a, e)
    x, lx = np.asarray(x), np.asarray(lx)
    assert np.all(np.isnan(x[2])) and np.all(np.isnan(lx[2]))
    assert np.all(np.isfinite(lx[[0, 1, 3]]))


def test_frechet_is_reverse_differentiable():
    rng = np.random.default_rng(9)
    a = random_with_norm(rng, (4, 4), 4.0)
    e = rng.standard_normal((4, 4))
    w = rng.standard_normal((N, N))
    with jax.enable_x64(True):
        # The baseline keeps this cheap; the rule (block matrix) is the same for all.
        fn = functools.partial(jexpm.expm_frechet, method="baseline", compute_expm=False)
        check_grads(fn, (a, e), order=1, modes=["fwd", "rev"])
        # L is linear in E with adjoint L(A^T, .): grad_E <W, L(A, E)> = L(A^T, W).
        a, e = random_with_norm(rng, (N, N), 4.0), rng.standard_normal((N, N))
        fn = functools.partial(jexpm.expm_frechet, method="opt15", compute_expm=False)
        grad_e = jax.grad(lambda e: jnp.sum(w * fn(a, e)))(e)
        _, want = jexpm.expm_frechet(a.T, w, method="opt15")
    assert rel_err(grad_e, want) <= 64 * EPS[np.dtype("float64")]


# ---------------------------------------------------------------------------------
# Forward mode and Hessians


def _central_difference(fn, a, e, h=1e-6):
    return (np.asarray(fn(a + h * e)) - np.asarray(fn(a - h * e))) / (2 * h)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FUNCS)
def test_jvp_matches_frechet_and_finite_differences(name, method):
    """jvp, linearize and jacfwd all give L(A, E), at norms that take every path."""
    rng = np.random.default_rng(11)
    fn = functools.partial(FUNCS[name], method=method)
    # One jitted jvp for every norm (same shape and dtype: one compilation, where a jit
    # made inside the loop traced and compiled, or fetched from the cache, once per norm).
    jvp = jax.jit(lambda a, e: jax.jvp(fn, (a,), (e,)))
    with jax.enable_x64(True):
        for norm in GRAD_NORMS:
            a = random_with_norm(rng, (N, N), norm)
            e = rng.standard_normal((N, N))
            x, tangent = jvp(a, e)
            np.testing.assert_array_equal(x, fn(a))
            fd = _central_difference(fn, a, e, h=1e-6 * max(1.0, norm))
            assert rel_err(tangent, fd) <= 1e-7, (norm, rel_err(tangent, fd))
            _, linear = jax.linearize(fn, a)
            assert rel_err(linear(e), tangent) <= 16 * EPS[np.dtype("float64")]
            if name == "expm":
                _, want = jexpm.expm_frechet(a, e, method=method)
                assert rel_err(tangent, want) <= 16 * EPS[np.dtype("float64")]
                assert rel_err(tangent, sl.expm_frechet(a, e)[1]) <= GRAD_RTOL[np.dtype("float64")]


def test_jacfwd_equals_jacrev():
    rng = np.random.default_rng(12)
    a = random_with_norm(rng, (4, 4), 3.0)
    with jax.enable_x64(True):
        fwd = np.asarray(jax.jacfwd(jexpm.expm)(a))
        rev = np.asarray(jax.jacrev(jexpm.expm)(a))
    assert fwd.shape == (4, 4, 4, 4)
    assert rel_err(fwd.reshape(16, 16), rev.reshape(16, 16)) <= 16 * EPS[np.dtype("float64")]
    # Column (i, j) of the Jacobian is L(A, E_ij).
    e = np.zeros((4, 4))
    e[1, 2] = 1.0
    _, l12 = sl.expm_frechet(a, e)
    assert rel_err(fwd[:, :, 1, 2], l12) <= GRAD_RTOL[np.dtype("float64")]


def test_forward_mode_under_jit_and_vmap():
    """jvp composes with vmap both ways, with jit, and costs the batched call under vmap."""
    a, e = _batch(seed=13)
    with jax.enable_x64(True):
        want = np.stack([sl.expm_frechet(a[i], e[i])[1] for i in range(a.shape[0])])

        def tangent(a, e):
            return jax.jvp(jexpm.expm, (a,), (e,))[1]

        results = {
            "jvp(batched)": tangent(a, e),
            "vmap(jvp)": jax.vmap(tangent)(a, e),
            "jvp(vmap)": jax.jvp(jax.vmap(jexpm.expm), (a,), (e,))[1],
            "jit(vmap(jvp))": jax.jit(jax.vmap(tangent))(a, e),
        }
    for what, got in results.items():
        assert rel_err(got, want) <= GRAD_RTOL[np.dtype("float64")], what
    np.testing.assert_array_equal(results["vmap(jvp)"], results["jvp(batched)"])


@pytest.mark.parametrize("method", ["opt15", "ps"])
def test_hessian_forward_over_reverse(method):
    """jax.hessian (jacfwd of jacrev) equals reverse over reverse and is symmetric."""
    n = 4
    rng = np.random.default_rng(14)
    a = random_with_norm(rng, (n, n), 3.0)
    g = rng.standard_normal((n, n))
    loss = functools.partial(_loss, method=method)
    # Jitted: one program per mode (an eager call compiles every control-flow primitive of
    # the nested derivative on its own, in about twice the time).
    with jax.enable_x64(True):
        fwd_rev = np.asarray(jax.jit(jax.hessian(loss))(a, g)).reshape(n * n, n * n)
        rev_rev = np.asarray(jax.jit(jax.jacrev(jax.jacrev(loss)))(a, g)).reshape(n * n, n * n)
        fwd_fwd = np.asarray(jax.jit(jax.jacfwd(jax.jacfwd(loss)))(a, g)).reshape(n * n, n * n)
    assert rel_err(fwd_rev, rev_rev) <= 64 * EPS[np.dtype("float64")]
    assert rel_err(fwd_fwd, rev_rev) <= 64 * EPS[np.dtype("float64")]
    assert rel_err(fwd_rev, fwd_rev.T) <= 100 * EPS[np.dtype("float64")]


def test_hessian_vector_product_forward_over_reverse():
    """The usual HVP, jvp(grad(f)), against central differences of the gradient."""
    rng = np.random.default_rng(15)
    a, g, v = random_with_norm(rng, (N, N), 5.0), *rng.standard_normal((2, N, N))
    grad = _grad_fn("opt15")
    with jax.enable_x64(True):
        _, hvp = jax.jvp(lambda x: grad(x, g), (a,), (v,))
        fd = _central_difference(lambda x: grad(x, g), a, v, h=1e-5)
    assert rel_err(hvp, fd) <= 1e-7


def test_forward_mode_nonfinite_and_capped_members_are_nan():
    a, e = _batch(seed=16)
    a[1, 2, 2] = np.nan
    with jax.enable_x64(True):
        x, t = jax.jvp(lambda a: jexpm.expm(a, max_squarings=2), (a,), (e,))
        info = jexpm.expm(a, return_info=True)[1]
        g = jax.grad(lambda a: jnp.sum(jexpm.expm(a, max_squarings=2) * e))(a)
    over = np.asarray(info.squarings) > 2
    assert over.any() and not over.all()
    bad = over.copy()
    bad[1] = True
    for got in (x, t, g):
        got = np.asarray(got)
        assert np.all(np.isnan(got[bad])) and np.all(np.isfinite(got[~bad]))


@pytest.mark.parametrize("method", ["opt15"])
def test_hessian_reverse_over_reverse(method):
    """jacrev(jacrev(f)) works and matches central differences of the gradient."""
    n = 4
    rng = np.random.default_rng(10)
    a = random_with_norm(rng, (n, n), 3.0)
    g = rng.standard_normal((n, n))
    with jax.enable_x64(True):
        hess = np.asarray(jax.jacrev(jax.jacrev(functools.partial(_loss, method=method)))(a, g))
        grad = _grad_fn(method)
        h = 1e-5
        fd = np.zeros((n, n, n, n))
        for i in range(n):
            for j in range(n):
                da = np.zeros((n, n))
                da[i, j] = h
                fd[:, :, i, j] = (np.asarray(grad(a + da, g)) - np.asarray(grad(a - da, g))) / (
                    2 * h
                )
    assert hess.shape == (n, n, n, n)
    assert rel_err(hess.reshape(n * n, n * n), fd.reshape(n * n, n * n)) <= 1e-8
    # A Hessian is symmetric.
    flat = hess.reshape(n * n, n * n)
    assert rel_err(flat, flat.T) <= 100 * EPS[np.dtype("float64")]


# ---------------------------------------------------------------------------------
# Upper triangular input: the derivative of the value with the exact band


def _mpmath_frechet(a, e, dps=60):
    """L(A, E) from the top-right block of exp([[A, E], [0, A]]) at ``dps`` digits."""
    import mpmath

    n = a.shape[0]
    block = np.block([[a, e], [np.zeros_like(a), a]])
    with mpmath.workdps(dps):
        x = mpmath.expm(mpmath.matrix(block.tolist()))
        return np.array(x.tolist(), dtype=np.float64)[:n, n:]


TRIANGULAR = {
    # 1e4 off-diagonals: 14 squarings, where the band recomputation matters.
    "1e4 off-diagonal": np.array([[1.0, 1e4, 1e4], [0.0, 2.0, 1e4], [0.0, 0.0, 3.0]]),
    "random 5x5, norm 60": np.triu(np.random.default_rng(20).standard_normal((5, 5))) * 20,
}


@pytest.mark.parametrize("name", TRIANGULAR)
def test_triangular_derivatives_against_mpmath(name):
    """jvp and grad on the exact-band path, against mpmath's block-matrix Frechet derivative.

    Along upper triangular directions the derivative is that of the exact band and
    beats scipy.linalg.expm_frechet; along general directions it is within 10x of it.
    """
    a = TRIANGULAR[name]
    n = a.shape[0]
    rng = np.random.default_rng(21)
    directions = {
        "upper": np.triu(rng.standard_normal((n, n))),
        "general": rng.standard_normal((n, n)),
    }
    with jax.enable_x64(True):
        info = jexpm.expm(a, return_info=True)[1]
        assert int(info.squarings) > 0
        for kind, e in directions.items():
            want = _mpmath_frechet(a, e)
            scipy_err = max(rel_err(sl.expm_frechet(a, e)[1], want), EPS[np.dtype("float64")])
            for upper_triangular in (None, True):
                fn = functools.partial(jexpm.expm, upper_triangular=upper_triangular)
                tangent = jax.jvp(fn, (a,), (e,))[1]
                err = rel_err(tangent, want)
                if kind == "upper":
                    assert err <= 16 * EPS[np.dtype("float64")], (kind, upper_triangular, err)
                assert err <= 10 * scipy_err, (kind, upper_triangular, err, scipy_err)
            # Reverse mode: d/dA sum(G * expm(A)) = L(A^T, G) = L(A, G^T)^T.
            grad = jax.grad(lambda a, g: jnp.sum(g * jexpm.expm(a)))(a, e)
            want_grad = _mpmath_frechet(a, e.T).T
            scipy_grad_err = max(
                rel_err(sl.expm_frechet(a.T, e)[1], want_grad), EPS[np.dtype("float64")]
            )
            assert rel_err(grad, want_grad) <= 10 * scipy_grad_err, kind


def test_triangular_derivative_is_that_of_the_computed_value():
    """Along upper triangular E the tangent equals central differences of the value itself."""
    a = TRIANGULAR["1e4 off-diagonal"]
    e = np.triu(np.random.default_rng(22).standard_normal((3, 3)))
    with jax.enable_x64(True):
        tangent = jax.jvp(jexpm.expm, (a,), (e,))[1]
        # Fourth-order differences (Richardson), so that the step's error is below 1e-11.
        h = 1e-3
        fd = (
            4 * _central_difference(jexpm.expm, a, e, h)
            - _central_difference(jexpm.expm, a, e, 2 * h)
        ) / 3
    assert rel_err(tangent, fd) <= 1e-10


def test_triangular_second_derivatives_agree_in_every_mode():
    """Second order on the exact-band path: forward and reverse agree, and match differences."""
    a = TRIANGULAR["1e4 off-diagonal"] / 1000
    g = np.random.default_rng(23).standard_normal((3, 3))
    with jax.enable_x64(True):
        assert int(jexpm.expm(a, return_info=True)[1].squarings) > 0
        check_grads(jexpm.expm, (a,), order=2, modes=["fwd", "rev"])

        def loss(a):
            return jnp.sum(g * jexpm.expm(a))

        fwd_rev = np.asarray(jax.jit(jax.hessian(loss))(a)).reshape(9, 9)
        rev_rev = np.asarray(jax.jit(jax.jacrev(jax.jacrev(loss)))(a)).reshape(9, 9)
    assert rel_err(fwd_rev, rev_rev) <= 64 * EPS[np.dtype("float64")]
    assert rel_err(fwd_rev, fwd_rev.T) <= 100 * EPS[np.dtype("float64")]
