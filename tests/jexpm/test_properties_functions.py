"""Property-based tests of jexpm's functions besides ``expm`` (Hypothesis).

The strategies, oracles and the profiles are described in ``test_properties_expm.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jexpm
from tests.helpers import enable_x64, mp_expm
from tests.jexpm.strategies import (
    ACCURATE,
    COMPLEX_DTYPES,
    FLOAT_DTYPES,
    SIZES,
    SLACK,
    U64,
    Batch,
    batches,
    check_against,
    error_bound,
    expm64,
    norm1,
    rel_errors,
    signs_and_scales,
    unit_roundoff,
)

#: The properties that compile several programs per example draw a third as many.
fewer = settings(max_examples=max(2, settings.default.max_examples // 3))

# ---------------------------------------------------------------------------------
# The other functions


@fewer
@given(
    batch=batches(
        sizes=(1, 3, 8), shapes=((3,),), dtypes=("float64", "complex128"), log10_norm=(-3, 1)
    ),
    direction=st.integers(0, 2**32 - 1),
    method=st.sampled_from(ACCURATE),
)
def test_jvp_is_the_frechet_derivative_and_matches_central_differences(
    batch: Batch, direction: int, method: str
):
    e = np.random.default_rng(direction).standard_normal(batch.a.shape).astype(batch.a.dtype)
    with enable_x64():
        x, tangent = jax.jvp(lambda a: jexpm.expm(a, method=method), (batch.a,), (e,))
        xf, frechet = jexpm.expm_frechet(batch.a, e, method=method)
        h = 1e-5
        plus = np.asarray(jexpm.expm(batch.a + h * e, method=method))
        minus = np.asarray(jexpm.expm(batch.a - h * e, method=method))
    tangent, frechet = np.asarray(tangent), np.asarray(frechet)
    np.testing.assert_array_equal(np.asarray(xf), np.asarray(x))
    scale = norm1(frechet)[..., None, None] + 1e-300
    assert np.all(norm1(tangent - frechet) <= 1e-12 * scale[..., 0, 0])
    # Central differences: truncation h^2 ||L''|| plus rounding u ||e^A|| / h.
    central = (plus - minus) / (2 * h)
    norm_x = norm1(np.asarray(x))
    assert np.all(norm1(central - tangent) <= 1e-6 * (scale[..., 0, 0] + norm_x))


@given(batch=batches(log10_norm=(-8.0, 2.0)), method=st.sampled_from(ACCURATE))
def test_phi1_matches_the_augmented_exponential(batch: Batch, method: str):
    """phi1(A) is the top-right block of exp([[A, I], [0, 0]]) (Higham 2008, 10.7.4)."""
    n = batch.a.shape[-1]
    ref = []
    for m in batch.flat():
        big = np.zeros((2 * n, 2 * n), dtype=m.dtype)
        big[:n, :n], big[:n, n:] = m, np.eye(n)
        ref.append(expm64(big)[:n, n:])
    ref = np.array(ref).reshape(batch.exact.shape)
    with enable_x64():
        check_against(jexpm.phi1(batch.a, method=method), batch, ref, factor=4.0)


@given(
    n=st.sampled_from(SIZES),
    r=st.sampled_from((1, 2, 4)),
    dtype=st.sampled_from(FLOAT_DTYPES + COMPLEX_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    log10_norm=st.floats(-6.0, 1.5),
)
def test_expm_lowrank_is_expm_of_the_product(n, r, dtype, seed, log10_norm):
    rng = np.random.default_rng(seed)
    complex_ = np.dtype(dtype).kind == "c"

    def draw(shape):
        z = rng.standard_normal(shape)
        return z + 1j * rng.standard_normal(shape) if complex_ else z

    u, v = draw((2, n, r)), draw((2, r, n))
    scale = np.sqrt(10.0**log10_norm / np.maximum(norm1(u @ v), 1e-300))[:, None, None]
    u, v = (u * scale).astype(dtype), (v * scale).astype(dtype)
    wide = np.complex128 if complex_ else np.float64
    product = u.astype(wide) @ v.astype(wide)
    ref = np.array([expm64(m) for m in product])
    with enable_x64():
        x = np.asarray(jexpm.expm_lowrank(u, v))
    for member in range(2):
        bound = error_bound(product[member], dtype, factor=4.0) * (1 + r)
        assert rel_errors(x[member], ref[member]) <= max(bound, 0.0) or bound >= 1


@fewer
@given(
    batch=batches(dtypes=("float64", "complex128"), log10_norm=(-6.0, 1.5)),
    direction=st.integers(0, 2**32 - 1),
)
def test_expm_frechet_matches_scipy(batch: Batch, direction: int):
    e = np.random.default_rng(direction).standard_normal(batch.a.shape).astype(batch.a.dtype)
    with enable_x64():
        x, frechet = jexpm.expm_frechet(batch.a, e)
    flat_x = np.asarray(x).reshape(batch.flat().shape)
    flat_l = np.asarray(frechet).reshape(batch.flat().shape)
    flat_e = e.reshape(batch.flat().shape)
    for i, m in enumerate(batch.flat()):
        ref_x, ref_l = scipy.linalg.expm_frechet(m, flat_e[i])
        bound = error_bound(m, batch.a.dtype)
        assert rel_errors(flat_x[i], ref_x) <= bound or bound >= 1
        # L(A, E) is a degree-one perturbation of exp: its error carries another ||A||.
        assert rel_errors(flat_l[i], ref_l) <= bound * (1 + norm1(m)) or bound >= 1


@fewer
@given(batch=batches(log10_norm=(-4.0, 2.0)))
def test_orthogonal_is_unitary_and_the_exponential_of_the_skew_part(batch: Batch):
    with enable_x64():
        q = np.asarray(jexpm.orthogonal(batch.a)).astype(batch.exact.dtype)
    n = batch.a.shape[-1]
    u = unit_roundoff(batch.a.dtype)
    skew = batch.exact - np.conj(np.swapaxes(batch.exact, -1, -2))
    gram = np.conj(np.swapaxes(q, -1, -2)) @ q
    # A unitary Q has ||Q||_1 <= sqrt(n); the loss of orthogonality grows with the
    # squarings, about log2 ||S||_1.
    squarings = np.maximum(np.log2(np.maximum(norm1(skew), 1.0)), 1.0)
    assert np.all(norm1(gram - np.eye(n)) <= SLACK * n * u * squarings * n)
    ref = np.array([expm64(m) for m in skew.reshape(-1, n, n)], dtype=q.dtype).reshape(q.shape)
    assert np.all(rel_errors(q, ref) <= SLACK * n * (u + U64) * squarings * n)


@given(
    batch=batches(shapes=((), (3,)), log10_norm=(-6.0, 2.0)),
    t=signs_and_scales(),
    columns=st.sampled_from((None, 1, 3)),
    seed=st.integers(0, 2**32 - 1),
)
def test_expm_multiply_is_expm_times_b(batch: Batch, t: float, columns, seed: int):
    n = batch.a.shape[-1]
    rng = np.random.default_rng(seed)
    b_shape = (*batch.a.shape[:-1],) if columns is None else (*batch.a.shape[:-1], columns)
    b = rng.standard_normal(b_shape).astype(batch.a.dtype)
    with enable_x64():
        y = np.asarray(jexpm.expm_multiply(batch.a, b, t=jnp.asarray(t, batch.a.real.dtype)))
    assert y.shape == b.shape and y.dtype == b.dtype
    flat_b = b.reshape(batch.members, n, -1).astype(batch.exact.dtype)
    flat_y = y.reshape(flat_b.shape).astype(batch.exact.dtype)
    for i, m in enumerate(batch.flat()):
        e = expm64(t * m)
        ref = e @ flat_b[i]
        # The action's error is relative to ||e^(tA)|| ||b||, scaled by the condition of
        # e^(tA) (Al-Mohy and Higham 2011, section 3).
        bound = error_bound(t * m, batch.a.dtype, factor=4.0)
        scale = norm1(e) * norm1(flat_b[i]) + 1e-300
        if bound >= 1 or not np.all(np.isfinite(ref)):
            continue
        assert norm1(flat_y[i] - ref) <= bound * scale, (
            f"member {i} ({batch.structures[i]}, ||a||_1 = {batch.norms[i]:.3g}, t = {t:.3g})"
        )


@pytest.mark.parametrize("k", [1, 3])
@given(batch=batches(sizes=(1, 3, 5), log10_norm=(-6.0, 1.0)))
# Found by the CI profile: SciPy's exponential of the block matrix was the error.
@example(batch=Batch(a=np.array([[10**0.5]]), structures=("dense",), norms=(10**0.5,)))
def test_phi_matches_the_augmented_exponential(k: int, batch: Batch):
    """phi_j(A) is block (0, j) of exp of the (k+1) x (k+1) block matrix with A in the
    corner and identities on the superdiagonal (Al-Mohy and Higham 2011, Theorem 2.1).

    The block matrix's exponential is taken in mpmath: SciPy's float64 one is off by
    more than jexpm's bound there (8e-14 relative on phi_0 of the 1 x 1 A = sqrt(10),
    k = 3, where jexpm's error against mpmath is 1.5e-16).
    """
    n = batch.a.shape[-1]
    refs = []
    for m in batch.flat():
        big = np.zeros(((k + 1) * n, (k + 1) * n), dtype=m.dtype)
        big[:n, :n] = m
        for j in range(k):
            big[j * n : (j + 1) * n, (j + 1) * n : (j + 2) * n] = np.eye(n)
        e = mp_expm(big, dps=30)
        refs.append([e[:n, j * n : (j + 1) * n] for j in range(k + 1)])
    ref = np.array(refs).reshape(*batch.a.shape[:-2], k + 1, n, n)
    with enable_x64():
        got = np.asarray(jexpm.phi(batch.a, k)).astype(batch.exact.dtype)
    assert got.shape == ref.shape
    u = unit_roundoff(batch.a.dtype)
    for j in range(k + 1):
        for i, m in enumerate(batch.flat()):
            bound = error_bound(m, batch.a.dtype, factor=4.0) + SLACK * n * u
            g = got.reshape(-1, k + 1, n, n)[i, j]
            r = ref.reshape(-1, k + 1, n, n)[i, j]
            assert rel_errors(g, r) <= bound or bound >= 1, f"phi_{j} of member {i}"
