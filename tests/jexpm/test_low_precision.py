"""bfloat16 / float16: expm, phi1, expm_lowrank, expm_frechet, orthogonal and gradients.

Targets (issue: low precision): on random 16x16 to 64x64 matrices at 1-norms 0.5, 2
and 8, relative error <= 3e-2 in bfloat16 and <= 3e-3 in float16 against float64
scipy on the rounded input, the input dtype returned, and never NaN for finite input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import jexpm
from tests.helpers import random_with_norm, rel_err

TARGET = {jnp.bfloat16: 3e-2, jnp.float16: 3e-3}
DTYPES = list(TARGET)
SIZES = (16, 32, 64)
NORMS = (0.5, 2.0, 8.0)


def _rounded(rng, shape, norm, dtype):
    a = jnp.asarray(random_with_norm(rng, shape, norm, np.float32), dtype)
    return a, np.asarray(a, np.float64)


@pytest.mark.parametrize("method", ["opt15", "ps"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_expm_low_precision_accuracy(dtype, method):
    rng = np.random.default_rng(0)
    for n in SIZES:
        for norm in NORMS:
            a, a64 = _rounded(rng, (3, n, n), norm, dtype)
            x = jexpm.expm(a, method=method)
            assert x.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(x)))
            ref = np.stack([sl.expm(m) for m in a64])
            err = max(rel_err(np.asarray(x[i], np.float64), ref[i]) for i in range(3))
            assert err <= TARGET[dtype], (n, norm, err)


@pytest.mark.parametrize("dtype", DTYPES)
def test_default_tol_follows_dtype(dtype):
    """The unit roundoff of the input dtype: fewer products than float32 needs."""
    rng = np.random.default_rng(1)
    a, _ = _rounded(rng, (32, 32), 2.0, dtype)
    _, low = jexpm.expm(a, return_info=True)
    _, high = jexpm.expm(a.astype(jnp.float32), return_info=True)
    assert int(low.products) < int(high.products)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_finite_input_is_never_nan(dtype):
    """Values near the dtype's range: results are finite or overflow to inf, not NaN."""
    big = float(jnp.finfo(dtype).max) / 64
    for a in (jnp.full((4, 4), big / 4, dtype), jnp.eye(4, dtype=dtype) * -big):
        x = jexpm.expm(a)
        assert not bool(jnp.any(jnp.isnan(x)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_phi1_lowrank_frechet_low_precision(dtype):
    rng = np.random.default_rng(2)
    a, a64 = _rounded(rng, (16, 16), 2.0, dtype)
    p = jexpm.phi1(a)
    assert p.dtype == dtype
    ref = np.linalg.solve(a64, sl.expm(a64) - np.eye(16))
    assert rel_err(np.asarray(p, np.float64), ref) <= TARGET[dtype]
    u = jnp.asarray(rng.standard_normal((32, 3)) / 4, dtype)
    v = jnp.asarray(rng.standard_normal((3, 32)) / 4, dtype)
    x = jexpm.expm_lowrank(u, v)
    assert x.dtype == dtype
    ref = sl.expm(np.asarray(u, np.float64) @ np.asarray(v, np.float64))
    assert rel_err(np.asarray(x, np.float64), ref) <= TARGET[dtype]
    e = jnp.asarray(rng.standard_normal((16, 16)), dtype)
    _, frechet = jexpm.expm_frechet(a, e)
    assert frechet.dtype == dtype
    ref = sl.expm_frechet(a64, np.asarray(e, np.float64), compute_expm=False)
    assert rel_err(np.asarray(frechet, np.float64), ref) <= TARGET[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_low_precision(dtype):
    rng = np.random.default_rng(3)
    a, a64 = _rounded(rng, (16, 16), 2.0, dtype)
    g = rng.standard_normal((16, 16))
    # A float32 loss of a low-precision exponential (the cast is explicit, as the
    # strict dtype promotion these tests run under requires).
    g32 = jnp.asarray(g, jnp.float32)
    grad = jax.grad(lambda a: jnp.sum(g32 * jexpm.expm(a).astype(jnp.float32)))(a)
    assert grad.dtype == dtype
    ref = sl.expm_frechet(a64.T, np.asarray(g, np.float64).astype(np.float64), compute_expm=False)
    # The cotangent is rounded to the input dtype on its way back, hence 2x the target.
    assert rel_err(np.asarray(grad, np.float64), ref) <= 2 * TARGET[dtype]


@pytest.mark.parametrize(("dtype", "bound"), [(jnp.float32, 1e-6), (jnp.bfloat16, 3e-2)])
def test_orthogonal_is_orthogonal(dtype, bound):
    """||Q^T Q - I||_max at 1-norm 3 of the skew part (issue targets)."""
    rng = np.random.default_rng(4)
    s = random_with_norm(rng, (4, 16, 16), 1.5, np.float32)
    k = s - np.swapaxes(s, -1, -2)
    s = s * (3.0 / np.abs(k).sum(axis=-2).max(axis=-1))[:, None, None]
    q = jexpm.orthogonal(jnp.asarray(s, dtype))
    assert q.dtype == dtype
    q = np.asarray(q, np.float64)
    err = np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(16)).max()
    assert err <= bound, err


def test_orthogonal_max_norm_and_complex():
    rng = np.random.default_rng(5)
    s = rng.standard_normal((6, 6)) * 10
    k = s - s.T
    q = np.asarray(jexpm.orthogonal(jnp.asarray(s, jnp.float32), max_norm=0.5), np.float64)
    # The rotation matches exp of the skew part scaled to 1-norm 0.5.
    ref = sl.expm(k * 0.5 / np.abs(k).sum(axis=0).max())
    assert rel_err(q, ref) <= 1e-5
    c = rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))
    u = np.asarray(jexpm.orthogonal(jnp.asarray(c, jnp.complex64)))
    assert np.abs(u.conj().T @ u - np.eye(5)).max() <= 1e-5
    with pytest.raises(ValueError, match="max_norm"):
        jexpm.orthogonal(jnp.eye(3), max_norm=0.0)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        jexpm.orthogonal(jnp.ones((3, 2)))
