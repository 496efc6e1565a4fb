"""phi and phi_multiply: against mpmath's series, SciPy's action and each other.

phi_k(A) = sum_j A^j / (j + k)! is summed directly in mpmath (not through either
method's identity) for every k <= 5 on matrices of the test catalogue, for both of
``phi``'s methods (modified squaring and the block matrix); every branch of modified
squaring's selection is reached on purpose; its derivatives against the block
matrix's (an independent computation), against central differences, and reverse mode
against forward mode (the adjoint identity), to second order; phi_multiply against
``scipy.sparse.linalg.expm_multiply`` of Al-Mohy and Higham's augmented matrix and
against ``phi(a) @ b``.
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
import scipy.sparse.linalg as ssl
from jax.test_util import check_grads

import jexpm
from jexpm import _phis
from tests.helpers import EPS, norm1, random_with_norm, rel_err
from tests.jexpm.matrices import CASES

#: Catalogue matrices (n <= 8, norm <= 60): diagonal, symmetric, defective, nilpotent,
#: badly conditioned, Jordan blocks, large norm, complex.
NAMES = (
    "burkardt1_diagonal",
    "laub",
    "mvl_nilpotent",
    "mvl_near_defective",
    "ward2",
    "trefethen_embree",
    "jordan_block_scaled",
    "pascal_log_6",
    "pang_ex2_complex",
    "burkardt_c8_complex",
    "zero_3x3",
)
K = 5


@functools.cache
def _mp_phis(name: str, dps: int = 80) -> np.ndarray:
    """phi_0..phi_K of a catalogue matrix from the series, in mpmath at ``dps`` digits."""
    a = CASES[name].a
    n = a.shape[0]
    with mpmath.workdps(dps):
        m = mpmath.matrix([[mpmath.mpc(complex(z).real, complex(z).imag) for z in r] for r in a])
        power, sums, j = mpmath.eye(n), [mpmath.zeros(n) for _ in range(K + 1)], 0
        while j < 6 or mpmath.mnorm(power, 1) / mpmath.factorial(j) > mpmath.mpf(10) ** (10 - dps):
            for i in range(K + 1):
                sums[i] += power / mpmath.factorial(j + i)
            j, power = j + 1, power * m
        out = np.array([[[complex(s[r, c]) for c in range(n)] for r in range(n)] for s in sums])
    return out if np.iscomplexobj(a) else out.real


@pytest.mark.parametrize("method", ["squaring", "opt15"])
@pytest.mark.parametrize("name", NAMES)
def test_phi_against_the_series_in_mpmath(name, method):
    a = CASES[name].a
    with jax.enable_x64(True):
        got = np.asarray(jexpm.phi(jnp.asarray(a), K, method=method))
    ref = _mp_phis(name)
    assert got.shape == (K + 1, *a.shape)
    bound = 64 * EPS[np.dtype("float64")] * max(1.0, float(norm1(a)))
    for k in range(K + 1):
        assert rel_err(got[k], ref[k]) <= bound, k


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_phi_identities_and_batches(dtype):
    """phi_0 = expm, phi_1 = phi1, phi_k = A phi_(k+1) + I / k!; batched as member by member."""
    with jax.enable_x64(dtype == "float64"):
        rng = np.random.default_rng(0)
        a = jnp.asarray(random_with_norm(rng, (3, 2, 4, 4), 3.0, dtype))
        p = jexpm.phi(a, 3)
        assert p.shape == (3, 2, 4, 4, 4) and p.dtype == a.dtype
        tol = 64 * EPS[np.dtype(dtype)] * 20
        assert rel_err(p[..., 0, :, :], jexpm.expm(a)) <= tol
        assert rel_err(p[..., 1, :, :], jexpm.phi1(a)) <= tol
        eye = jnp.eye(4, dtype=a.dtype)
        for k in range(3):
            rhs = a @ p[..., k + 1, :, :] + jnp.broadcast_to(eye / math.factorial(k), a.shape)
            assert rel_err(p[..., k, :, :], rhs) <= tol
        one = jexpm.phi(a[1, 0], 3)
        assert rel_err(p[1, 0], one) <= tol
        # A NaN member is NaN; the others are unchanged.
        bad = a.at[0, 1, 2, 2].set(jnp.nan)
        q = jexpm.phi(bad, 3)
        assert bool(jnp.all(jnp.isnan(q[0, 1])))
        np.testing.assert_array_equal(np.asarray(q[2]), np.asarray(p[2]))


def _scipy_phis(a: np.ndarray, k: int) -> np.ndarray:
    """phi_0..phi_k of a (..., n, n) stack: the first block row of scipy's e^W, float64."""
    n = a.shape[-1]
    w = np.zeros((*a.shape[:-2], (k + 1) * n, (k + 1) * n), np.result_type(a, np.float64))
    w[..., :n, :n] = a
    w[..., : k * n, n:] += np.eye(k * n)
    top = scipy.linalg.expm(w)[..., :n, :]
    return np.stack([top[..., j * n : (j + 1) * n] for j in range(k + 1)], axis=-3)


def test_the_modified_squaring_relation():
    """phi_j(2X) = 2^-j [phi_0(X) phi_j(X) + sum_{i=1..j} phi_i(X)/(j-i)!] (on SciPy's phis)."""
    rng = np.random.default_rng(1)
    a = random_with_norm(rng, (3, 5, 5), 2.0)
    k = 4
    p, q = _scipy_phis(a, k), _scipy_phis(2 * a, k)
    for j in range(k + 1):
        mixed = sum(p[:, i] / math.factorial(j - i) for i in range(1, j + 1))
        assert rel_err((p[:, 0] @ p[:, j] + mixed) / 2**j, q[:, j]) < 1e-13


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_plan_meets_its_bound_and_no_lower_degree_does(k, dtype):
    tol = float(EPS[np.dtype(dtype)]) / 2
    plan = _phis.plan(k, dtype, tol)
    lower = _phis._lower_bounds(plan.theta, k)
    # The disc's minimum of |e^z| is e^-theta; of |phi_1|, at most |phi_1(-theta)|.
    assert lower[0] == pytest.approx(math.exp(-plan.theta), rel=1e-12)
    if k:
        assert lower[1] <= (1 - math.exp(-plan.theta)) / plan.theta * (1 + 1e-12)
    m = plan.degree
    for j in range(k + 1):
        assert _phis._tail(plan.theta, m + k - j, j) <= tol * lower[j]
    assert any(_phis._tail(plan.theta, m - 1 + k - j, j) > tol * lower[j] for j in range(k + 1))


def _squarings(a: jax.Array, k: int, tol: float) -> np.ndarray:
    return np.asarray(_phis.ModifiedSquaring(k, tol).compute(a, tol)[1].squarings)


def test_every_branch_of_the_selection():
    """s = 0; s from the 1-norm; s lowered by the norms of powers (to 0 at most, for a
    nilpotent matrix, whose powers vanish); a plan without the refinement (p < 3, at a
    loose tol). Each against SciPy in float64."""
    k, tol = 3, 2.0**-53
    plan = _phis.plan(k, "float64", tol)
    assert plan.p >= 3
    rng = np.random.default_rng(7)
    small = random_with_norm(rng, (4, 4), 0.5 * plan.theta)
    gaussian = random_with_norm(rng, (4, 4), 64 * plan.theta)
    # Strongly non-normal: ||A||_1 about 2^20, ||A^j||^(1/j) about 2^(1 + 20/j).
    triangular = np.diag(-np.arange(1.0, 5.0))
    triangular[0, 1] = 2.0**20
    # N^2 = 0: every power past the first vanishes.
    nilpotent = np.zeros((4, 4))
    nilpotent[0, 2] = 100.0
    a = np.stack([small, gaussian, triangular, nilpotent])
    s0 = np.maximum(0, np.ceil(np.log2(np.abs(a).sum(-2).max(-1) / plan.theta)))
    with jax.enable_x64(True):
        s = _squarings(jnp.asarray(a), k, tol)
        got = np.asarray(jexpm.phi(jnp.asarray(a), k))
        assert s[0] == 0 and s[1] == s0[1]
        assert s[2] <= s0[2] - 5  # alpha = ||X^(p-1)||^(1/(p-1)) about 2^(20/(p-1))
        assert s[3] == 0 < s0[3]
        ref = _scipy_phis(a, k)
        for i in range(4):
            bound = 256 * EPS[np.dtype("float64")] * max(1.0, float(s0[i]))
            assert rel_err(got[i], ref[i]) <= bound, i
        loose = 1e-3
        assert _phis.plan(k, "float64", loose).p < 3
        rough = np.asarray(jexpm.phi(jnp.asarray(a[:2]), k, tol=loose))
        assert rel_err(rough, ref[:2]) <= 10 * loose


def test_derivatives_both_modes_match_the_block_matrix_and_each_other():
    """Members with 0 to 8 squarings in one batch, real and complex: forward mode
    against the block matrix's (another algorithm, the same function), reverse mode
    against forward mode by <G, L(E)> = <L*(G), E>, and second derivatives (Hessian by
    forward-over-reverse and reverse-over-forward) against the block matrix's."""
    rng = np.random.default_rng(11)
    with jax.enable_x64(True):
        for dtype in ("float64", "complex128"):
            a = random_with_norm(rng, (4, 5, 5), 1.0, dtype)
            a = jnp.asarray(a * np.array([0.01, 1.0, 30.0, 300.0])[:, None, None])
            e = jnp.asarray(random_with_norm(rng, (4, 5, 5), 1.0, dtype))
            for k in (0, 2, 4):
                g = jnp.asarray(random_with_norm(rng, (4, k + 1, 5, 5), 1.0, dtype))
                _, tangent = jax.jvp(lambda x, k=k: jexpm.phi(x, k), (a,), (e,))
                _, block = jax.jvp(lambda x, k=k: jexpm.phi(x, k, method="opt15"), (a,), (e,))
                assert rel_err(tangent, block) <= 1e-12, (dtype, k)
                (cotangent,) = jax.vjp(lambda x, k=k: jexpm.phi(x, k), a)[1](g)
                lhs, rhs = jnp.sum(g * tangent), jnp.sum(cotangent * e)
                assert abs(lhs - rhs) <= 1e-13 * abs(lhs), (dtype, k)
        a = jnp.asarray(random_with_norm(rng, (3, 3), 5.0))
        w = jnp.asarray(rng.standard_normal((3, 3, 3)))

        def loss(x, method):
            return jnp.sum(jexpm.phi(x, 2, method=method) * w)

        want = jax.hessian(lambda x: loss(x, "opt15"))(a)
        for hessian in (jax.jacfwd(jax.grad(loss)), jax.jacrev(jax.jacfwd(loss))):
            assert rel_err(hessian(a, "squaring"), want) <= 1e-12


def test_empty_and_low_precision_input():
    assert jexpm.phi(jnp.zeros((2, 0, 0)), 2).shape == (2, 3, 0, 0)
    assert jexpm.phi(jnp.zeros((0, 3, 3)), 2).shape == (0, 3, 3, 3)
    a = jnp.asarray(random_with_norm(np.random.default_rng(3), (2, 4, 4), 3.0))
    low = jexpm.phi(a.astype(jnp.bfloat16), 2)
    assert low.dtype == jnp.bfloat16
    assert rel_err(low.astype(jnp.float32), jexpm.phi(a, 2)) <= 2e-2


def _augmented(a: np.ndarray, bs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Al-Mohy and Higham (2011), Theorem 2.1, written out in NumPy for one vector set."""
    n, p = a.shape[0], bs.shape[0] - 1
    big = np.zeros((n + p, n + p))
    big[:n, :n] = a
    for j in range(p):
        big[:n, n + j] = bs[p - j]
    big[n : n + p - 1, n + 1 :] = np.eye(p - 1)
    rhs = np.zeros(n + p)
    rhs[:n], rhs[-1] = bs[0], 1
    return big, rhs


@pytest.mark.parametrize("t", [0.05, 1.0, -0.7])
@pytest.mark.parametrize("p", [0, 1, 3])
def test_phi_multiply_against_scipy_and_phi(t, p):
    rng = np.random.default_rng(p)
    a = random_with_norm(rng, (12, 12), 8.0)
    bs = rng.standard_normal((p + 1, 12))
    with jax.enable_x64(True):
        got = np.asarray(jexpm.phi_multiply(a, bs, t=t))
        phis = np.asarray(jexpm.phi(t * a, p))
        # Blocks of two columns: each column as its own vector set.
        blocks = np.stack([bs, 2 * bs[::-1] if p else -bs], axis=-1)
        got_blocks = np.asarray(jexpm.phi_multiply(a, blocks, t=t, method="expm"))
    from_phi = sum(t**k * phis[k] @ bs[k] for k in range(p + 1))
    if p:
        big, rhs = _augmented(a, bs)
        scipy = ssl.expm_multiply(t * big, rhs)[:12]
    else:
        scipy = ssl.expm_multiply(t * a, bs[0])
    scale = np.abs(from_phi).max()
    assert np.abs(got - scipy).max() <= 1e-12 * scale
    assert np.abs(got - from_phi).max() <= 1e-12 * scale
    for c in range(2):
        want = sum(t**k * phis[k] @ blocks[k, :, c] for k in range(p + 1))
        assert np.abs(got_blocks[:, c] - want).max() <= 1e-12 * np.abs(want).max()


def test_derivatives_against_central_differences():
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        a = jnp.asarray(random_with_norm(rng, (3, 3), 2.0))
        bs = jnp.asarray(rng.standard_normal((3, 3)))
        check_grads(lambda a: jexpm.phi(a, 2), (a,), order=1, modes=["fwd", "rev"])
        check_grads(
            lambda a, bs, t: jexpm.phi_multiply(a, bs, t=t),
            (a, bs, 0.4),
            order=1,
            modes=["fwd", "rev"],
        )


def test_bad_input():
    with pytest.raises(ValueError, match=r"phi: method must be one of \('squaring', 'opt15'"):
        jexpm.phi(jnp.eye(2), 1, method="pade")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"phi: tol must satisfy 0 < tol < 1, got 2.0"):
        jexpm.phi(jnp.eye(2), 1, tol=2.0)
    with pytest.raises(ValueError, match=r"phi: k must be a Python int >= 0, got -1"):
        jexpm.phi(jnp.eye(2), -1)
    with pytest.raises(ValueError, match=r"phi: k must be"):
        jexpm.phi(jnp.eye(2), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        jexpm.phi(jnp.ones((2, 3)), 1)
    with pytest.raises(ValueError, match=r"bs must be .* got shape \(2, 3\)"):
        jexpm.phi_multiply(jnp.eye(2), jnp.ones((2, 3)))
