"""Property-based tests of jexpm.expm (Hypothesis); the other functions are in
``test_properties_functions.py``.

The design of both files:

The hand-picked tests check the cases someone thought of; these search. Each property
draws batches of structured matrices (``tests/jexpm/strategies.py``: dense, triangular,
diagonal, nilpotent, skew, normal, non-normal, block diagonal; real and complex; 1-norms
from 1e-8 to 1e6; n from 1 to 16; empty and one-member batches) and checks what must
hold for every one of them:

* agreement with an independent oracle (SciPy in float64) within a tolerance scaled by
  the exponential's condition number (``scipy.linalg.expm_cond``);
* identities: e^A e^(-A) = I and det e^A = e^(tr A) where well conditioned; diagonal and
  triangular matrices against their closed forms;
* transformations: eager, ``jit`` and ``vmap`` give the same bits; ``jvp`` equals
  ``expm_frechet`` and central differences;
* isolation: a member with a NaN or an Inf gives NaN and leaves the others' bits alone;
* range: the result is finite wherever the exact exponential is representable.

Compiling a program for a new shape and dtype costs far more than running it, so the
strategies draw shapes from small pools and vary the values freely. Two profiles
(registered in ``tests/conftest.py``): ``ci``, the default, a few examples per property
from a fixed seed, runs in the suite; ``deep`` (``python -m pytest -n 2
tests/jexpm/test_properties_expm.py tests/jexpm/test_properties_functions.py
--hypothesis-profile=deep``) searches tens of thousands of examples. A failure either
search finds becomes a regular regression test.
"""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import jexpm
from tests.helpers import enable_x64
from tests.jexpm.strategies import (
    ACCURATE,
    SLACK,
    Batch,
    batches,
    check_against,
    norm1,
    oracle,
    representable,
    unit_roundoff,
)

# ---------------------------------------------------------------------------------
# expm


def _in_range(values: np.ndarray, dtype) -> np.ndarray:
    """Where |values| is a normal number of ``dtype`` with room to spare: elsewhere the
    exact result overflows, or lies where XLA:CPU flushes subnormals to zero."""
    info = np.finfo(np.dtype(dtype))
    size = np.abs(values)
    return (size < float(info.max) / 4) & (size > float(info.tiny) / unit_roundoff(dtype))


def _close(got, want, tol, where) -> None:
    """|got - want| <= tol entrywise, where ``where``."""
    err = np.where(where, np.abs(got - want), 0.0)
    np.testing.assert_array_less(err, np.where(where, tol, 1.0) + 1e-300)


@given(batch=batches(log10_norm=(-8.0, 3.0)), method=st.sampled_from(ACCURATE))
def test_expm_matches_scipy(batch: Batch, method: str):
    with enable_x64():
        check_against(jexpm.expm(batch.a, method=method), batch, oracle(batch))


@given(batch=batches(structures=("diagonal",), log10_norm=(-8.0, 2.0)))
def test_expm_of_a_diagonal_is_the_exponential_of_its_entries(batch: Batch):
    with enable_x64():
        x = np.asarray(jexpm.expm(batch.a))
    d = np.diagonal(batch.exact, axis1=-2, axis2=-1)
    got = np.diagonal(x, axis1=-2, axis2=-1).astype(d.dtype)
    # The triangular band is recomputed exactly: a few roundings of exp per entry.
    u = unit_roundoff(batch.a.dtype)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(d)
    ok = _in_range(want, batch.a.dtype)
    _close(got, want, 8 * u * np.abs(want), ok)
    # Off the diagonal exact zeros, in members whose exponential does not overflow.
    off = x[..., ~np.eye(x.shape[-1], dtype=bool)]
    bounded = np.all(np.abs(want) < float(np.finfo(np.dtype(batch.a.dtype)).max) / 4, axis=-1)
    assert np.all(off[bounded] == 0)


@given(batch=batches(structures=("upper_triangular", "nonnormal"), log10_norm=(-4.0, 2.0)))
def test_expm_of_a_triangular_matrix_has_its_closed_form_band(batch: Batch):
    """diag e^T = e^(t_ii); superdiagonal t_i,i+1 (e^(t_ii) - e^(t_jj)) / (t_ii - t_jj)."""
    with enable_x64():
        x = np.asarray(jexpm.expm(batch.a)).astype(batch.exact.dtype)
    t = batch.exact
    n = t.shape[-1]
    u = unit_roundoff(batch.a.dtype)
    d = np.diagonal(t, axis1=-2, axis2=-1)
    assert np.all(np.tril(x, -1) == 0)
    diag = np.diagonal(x, axis1=-2, axis2=-1)
    with np.errstate(over="ignore", under="ignore"):
        e = np.exp(d)
    ok = _in_range(e, batch.a.dtype)
    _close(diag, e, 8 * u * np.abs(e), ok)
    if n > 1:
        di, dj = d[..., :-1], d[..., 1:]
        delta = di - dj
        mean = (di + dj) / 2
        # (e^a - e^b)/(a - b) = e^((a+b)/2) sinh((a-b)/2) / ((a-b)/2), stable as a -> b.
        half = delta / 2
        ratio = np.where(half == 0, 1.0, np.sinh(half) / np.where(half == 0, 1.0, half))
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            sup_exact = np.diagonal(t, 1, axis1=-2, axis2=-1) * np.exp(mean) * ratio
            scale = np.abs(np.diagonal(t, 1, axis1=-2, axis2=-1)) * np.maximum(
                np.abs(e[..., :-1]), np.abs(e[..., 1:])
            )
        sup = np.diagonal(x, 1, axis1=-2, axis2=-1)
        both = ok[..., :-1] & ok[..., 1:] & _in_range(scale, batch.a.dtype)
        _close(sup, sup_exact, 16 * u * scale, both)


@given(batch=batches(log10_norm=(-8.0, 0.0)), method=st.sampled_from(ACCURATE))
def test_expm_times_expm_of_minus_a_is_the_identity(batch: Batch, method: str):
    with enable_x64():
        x = np.asarray(jexpm.expm(batch.a, method=method)).astype(batch.exact.dtype)
        y = np.asarray(jexpm.expm(-batch.a, method=method)).astype(batch.exact.dtype)
    n = batch.a.shape[-1]
    err = norm1(x @ y - np.eye(n))
    # ||A||_1 <= 1: ||e^A|| ||e^-A|| <= e^2, and the condition of exp is at most e^2.
    assert np.all(err <= SLACK * n * unit_roundoff(batch.a.dtype) * np.e**4)


@given(batch=batches(log10_norm=(-8.0, 0.5)), method=st.sampled_from(ACCURATE))
def test_det_of_expm_is_exp_of_trace(batch: Batch, method: str):
    with enable_x64():
        x = np.asarray(jexpm.expm(batch.a, method=method)).astype(batch.exact.dtype)
    n = batch.a.shape[-1]
    det = np.linalg.det(x) if n else np.ones(batch.a.shape[:-2])
    expected = np.exp(np.trace(batch.exact, axis1=-2, axis2=-1))
    # ||A||_1 <= 10**0.5: a relative error n u e^(2 ||A||) per entry moves det by about n
    # times that.
    tol = SLACK * n * n * unit_roundoff(batch.a.dtype) * np.exp(2 * 10**0.5)
    np.testing.assert_array_less(np.abs(det - expected), tol * np.abs(expected) + 1e-300)


@settings(max_examples=max(2, settings.default.max_examples // 2))
@given(batch=batches(), method=st.sampled_from((*ACCURATE, "baseline")))
def test_eager_jit_and_vmap_agree_bit_for_bit(batch: Batch, method: str):
    with enable_x64():
        eager = np.asarray(jexpm.expm(batch.a, method=method))
        jitted = np.asarray(jax.jit(lambda a: jexpm.expm(a, method=method))(batch.a))
        if batch.a.ndim == 2:
            mapped = eager
        else:
            mapped = np.asarray(jax.vmap(lambda a: jexpm.expm(a, method=method))(batch.a))
    np.testing.assert_array_equal(jitted, eager)
    np.testing.assert_array_equal(mapped, eager)


@given(
    batch=batches(shapes=((3,), (2, 2)), log10_norm=(-3.0, 3.0)),
    poisoned=st.integers(0, 2),
    value=st.sampled_from((np.nan, np.inf, -np.inf)),
    method=st.sampled_from((*ACCURATE, "baseline")),
)
def test_a_non_finite_member_gives_nan_and_leaves_the_others_alone(
    batch: Batch, poisoned: int, value: float, method: str
):
    """The others get the bits of the batch without the member: it decides nothing for
    them (not the order they share, not whether the batch counts as triangular)."""
    n = batch.a.shape[-1]
    flat = batch.a.reshape(-1, n, n)
    bad = flat.copy()
    bad[poisoned, 0, n - 1] = value
    others = np.arange(len(flat)) != poisoned
    with enable_x64():
        x_alone = np.asarray(jexpm.expm(flat[others], method=method))
        x_bad = np.asarray(jexpm.expm(bad, method=method))
    assert np.all(np.isnan(x_bad[poisoned]))
    np.testing.assert_array_equal(x_bad[others], x_alone)


@given(
    batch=batches(
        structures=("skew", "normal", "diagonal", "upper_triangular", "block_diagonal"),
        log10_norm=(0.0, 8.0),
        negative=True,
    ),
    method=st.sampled_from(ACCURATE),
)
def test_finite_wherever_the_exponential_is_representable(batch: Batch, method: str):
    """Spectra in the closed left half plane, norms to 1e8: e^A is bounded, so finite."""
    with enable_x64():
        x = np.asarray(jexpm.expm(batch.a, method=method))
    ref = oracle(batch).reshape(-1, *batch.a.shape[-2:])
    x = x.reshape(ref.shape)
    for i, r in enumerate(ref):
        if representable(r, batch.a.dtype):
            assert np.all(np.isfinite(x[i])), f"member {i} ({batch.structures[i]})"
