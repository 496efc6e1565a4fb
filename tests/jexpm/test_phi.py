"""phi and phi_multiply: against mpmath's series, SciPy's action and each other.

phi_k(A) = sum_j A^j / (j + k)! is summed directly in mpmath (not through the block
identity the library uses) for every k <= 5 on matrices of the test catalogue;
phi_multiply against ``scipy.sparse.linalg.expm_multiply`` of Al-Mohy and Higham's
augmented matrix and against ``phi(a) @ b``; derivatives of both against central
differences, in both modes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.sparse.linalg as ssl
from jax.test_util import check_grads

import jexpm
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


@pytest.mark.parametrize("name", NAMES)
def test_phi_against_the_series_in_mpmath(name):
    a = CASES[name].a
    with jax.enable_x64(True):
        got = np.asarray(jexpm.phi(jnp.asarray(a), K))
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
    with pytest.raises(ValueError, match=r"phi: k must be a Python int >= 0, got -1"):
        jexpm.phi(jnp.eye(2), -1)
    with pytest.raises(ValueError, match=r"phi: k must be"):
        jexpm.phi(jnp.eye(2), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        jexpm.phi(jnp.ones((2, 3)), 1)
    with pytest.raises(ValueError, match=r"bs must be .* got shape \(2, 3\)"):
        jexpm.phi_multiply(jnp.eye(2), jnp.ones((2, 3)))
