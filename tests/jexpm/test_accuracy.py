"""Accuracy of jexpm against high-precision mpmath references, with scipy as the yardstick.

The float64 criterion (scipy.linalg.expm, the Al-Mohy and Higham 2009 algorithm, is the
accuracy reference): on every hard matrix of the catalogue, the normwise relative error
(1-norm) of the library's methods ("opt15", "ps") against the mpmath exponential must be
within 10 x max(scipy's own error, u), u = 2**-53, and the result must be finite wherever
the true exponential is.

``method="baseline"`` reproduces Xiao and Liu's loop, whose norm-only scaling
overscales badly scaled and non-normal matrices; it is held to being a faithful
reproduction (against an independent NumPy transcription) rather than to scipy.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jexpm
from tests.helpers import enable_x64, mp_expm, mp_phi1, random_with_norm, rel_err
from tests.jexpm.matrices import CASES, COMPLEX, REAL, gh25924_batch

METHODS = ("opt15", "ps", "baseline")
ACCURATE = ("opt15", "ps")
U64 = 2.0**-53
F32_TOL = 5e-6  # float32 bound on flow-sized matrices (about 80 x 2**-24)


def _reference(name: str) -> np.ndarray:
    case = CASES[name]
    ref = mp_expm(case.a, case.dps)
    assert np.all(np.isfinite(ref)), f"{name}: reference is not finite"
    return ref


def _check_against_scipy_bound(x, ref, scipy_result, what: str) -> None:
    """rel_err(x) <= 10 max(rel_err(scipy), u), and x finite (ref is finite)."""
    assert np.all(np.isfinite(x)), f"{what}: non-finite entries, true value is finite"
    scipy_err = rel_err(scipy_result, ref)
    bound = 10 * max(scipy_err, U64)
    err = rel_err(x, ref)
    assert err <= bound, (
        f"{what}: rel_err {err:.3e} > 10 * max(scipy {scipy_err:.3e}, u) = {bound:.3e}"
    )


# --- the oracle and the catalogue ---------------------------------------------------


@pytest.mark.parametrize(
    "name", [n for n, c in CASES.items() if c.exact is not None or c.published is not None]
)
def test_reference_matches_known_values(name):
    """The mpmath oracle reproduces closed forms and published values (this also checks
    that the catalogue's matrices were transcribed correctly)."""
    case = CASES[name]
    ref = _reference(name)
    if case.exact is not None:
        assert rel_err(case.exact, ref) <= 8 * U64
    if case.published is not None:
        values, rtol = case.published
        np.testing.assert_allclose(ref, values, rtol=rtol, atol=0)


def test_reference_is_stable_in_precision():
    """More digits do not move the references of the hardest cases."""
    for name in ("triu_expm_logm", "awad_1e17", "godunov", "kenney_laub_5x5", "awad_27"):
        case = CASES[name]
        assert rel_err(mp_expm(case.a, case.dps + 40), _reference(name)) <= U64, name


# --- float64 accuracy on the hard matrices ---------------------------------------------


@pytest.mark.parametrize("method", ACCURATE)
@pytest.mark.parametrize("name", REAL + COMPLEX)
def test_expm_float64_hard_matrices(name, method):
    """Real cases in float64, complex ones in complex128."""
    case = CASES[name]
    ref = _reference(name)
    with enable_x64():
        x = jexpm.expm(jnp.asarray(case.a), method=method)
        assert x.dtype == (jnp.complex128 if np.iscomplexobj(case.a) else jnp.float64)
        x = np.asarray(x)
    _check_against_scipy_bound(x, ref, scipy.linalg.expm(case.a), f"{name} [{method}]")


@pytest.mark.parametrize("method", METHODS)
def test_gh25924_batch_equals_slices(method):
    """A batch whose slices need different scalings (scipy gh-25924): each slice of the
    batched result equals the one-at-a-time result (to 1 ulp of its largest entry) and
    is accurate."""
    a = gh25924_batch()
    with enable_x64():
        batched, info = jexpm.expm(jnp.asarray(a), method=method, return_info=True)
        batched = np.asarray(batched)
        single = np.stack([np.asarray(jexpm.expm(jnp.asarray(x), method=method)) for x in a])
        squarings = np.asarray(info.squarings)
    assert len(set(squarings.tolist())) > 1, f"slices share s = {squarings}"
    for i in range(len(a)):
        ulp = np.spacing(np.abs(single[i]).max())
        diff = np.abs(batched[i] - single[i]).max()
        assert diff <= ulp, f"slice {i}: batched differs from single by {diff / ulp:.1f} ulp"
        if method not in ACCURATE:
            continue
        _check_against_scipy_bound(
            batched[i], mp_expm(a[i]), scipy.linalg.expm(a[i]), f"slice {i} [{method}]"
        )


# --- the baseline is the published loop, faithfully ----------------------------------


def _xiao_liu_expm(a: np.ndarray, tol: float) -> tuple[np.ndarray, int, int]:
    """Xiao and Liu's expm (ICML 2020, code changyi7231/MEF), transcribed in NumPy with
    the 1-norm and the given tolerance: scale to ||X|| <= 1/2, add t_k = X t_{k-1} / k
    while ||t_k|| > tol, square back. Returns (result, terms, squarings)."""
    norm = np.abs(a).sum(axis=0).max()
    s = int(np.ceil(np.log2(max(norm, 0.5)))) + 1
    x = a / 2.0**s
    total, t, k = np.eye(len(a)), x, 2
    while np.abs(t).sum(axis=0).max() > tol:
        total = total + t
        t = x @ t / k
        k += 1
    for _ in range(s):
        total = total @ total
    return total, k - 2, s


@pytest.mark.parametrize("name", REAL)
def test_baseline_reproduces_xiao_liu(name):
    a = CASES[name].a
    ref, terms, s = _xiao_liu_expm(a, U64)
    with enable_x64():
        x, info = jexpm.expm(jnp.asarray(a), method="baseline", return_info=True)
    assert (int(info.order), int(info.squarings)) == (terms, s)
    assert int(info.products) == terms + s
    # Same algorithm; rounding differences of the products grow by up to 2**s, and by
    # the problem's conditioning, which scipy's own error against mpmath measures.
    conditioning = rel_err(scipy.linalg.expm(a), _reference(name))
    assert rel_err(x, ref) <= 64 * U64 * 2.0**s + 100 * conditioning


def test_baseline_overscaling_is_what_opt15_avoids():
    """[[1, 1e17], [0, 1]]: the norm-only scaling takes ~58 squarings and loses the
    diagonal entirely; opt15 (bounds from ||A^2||, exact triangular diagonal) does not."""
    a = np.array([[1.0, 1e17], [0.0, 1.0]])
    ref = np.array([[np.e, np.e * 1e17], [0.0, np.e]])
    with enable_x64():
        base, base_info = jexpm.expm(jnp.asarray(a), method="baseline", return_info=True)
        opt, opt_info = jexpm.expm(jnp.asarray(a), return_info=True)
    assert rel_err(base, ref) > 0.1
    assert rel_err(opt, ref) <= 4 * U64
    assert int(opt_info.products) < int(base_info.products)


# --- float32 on flow-sized matrices -----------------------------------------------------

F32_SIZES = (6, 12, 24, 48)
F32_NORMS = (0.01, 0.1, 1.0, 2.0, 10.0, 50.0)
F32_SEEDS = 4  # batch members per (n, norm), one random matrix per seed


@pytest.mark.parametrize("method", ACCURATE)
@pytest.mark.parametrize("norm", F32_NORMS)
@pytest.mark.parametrize("n", F32_SIZES)
def test_expm_float32_flow_sizes(n, norm, method):
    rng = np.random.default_rng([n, int(norm * 100)])
    a = random_with_norm(rng, (F32_SEEDS, n, n), norm, dtype=np.float32)
    # Reference: float64 scipy on the float32-rounded input, one slice at a time.
    ref = np.stack([scipy.linalg.expm(x.astype(np.float64)) for x in a])
    with enable_x64():
        x = jexpm.expm(jnp.asarray(a), method=method)
        assert x.dtype == jnp.float32
        x = np.asarray(x)
    assert np.all(np.isfinite(x))
    errs = [rel_err(x[i], ref[i]) for i in range(F32_SEEDS)]
    assert max(errs) <= F32_TOL, f"rel_err per member {np.array(errs)} > {F32_TOL}"


# --- phi1 ---------------------------------------------------------------------------------

PHI1_NORMS = (1e-3, 1e-1, 1.0, 5.0, 20.0, 100.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", PHI1_NORMS)
@pytest.mark.parametrize("kind", ("gaussian", "nonnormal"))
def test_phi1_float64(kind, norm, method):
    """phi1 against mpmath (block identity); the yardstick is scipy's expm of the same
    2n x 2n block [[A, I], [0, 0]], whose top-right block is phi1(A)."""
    n = 6
    a = random_with_norm(np.random.default_rng(7), (n, n), norm, kind=kind)
    ref = mp_phi1(a)
    block = np.block([[a, np.eye(n)], [np.zeros((n, n)), np.zeros((n, n))]])
    with enable_x64():
        x = np.asarray(jexpm.phi1(jnp.asarray(a), method=method))
    _check_against_scipy_bound(
        x, ref, scipy.linalg.expm(block)[:n, n:], f"phi1 {kind} norm {norm} [{method}]"
    )


# --- low-rank exponentials ---------------------------------------------------------------


@pytest.mark.parametrize("r", (1, 3))
@pytest.mark.parametrize("n", (8, 30, 48))
def test_expm_lowrank_float64(n, r):
    """exp(U V) = I + U phi1(V U) V agrees with scipy's dense expm(U @ V) to 100 u.

    Default method only: every method's phi1 is checked above, and each (n, r) costs
    a compilation."""
    rng = np.random.default_rng([n, r])
    u = rng.standard_normal((n, r))
    v = rng.standard_normal((r, n)) / np.sqrt(n)
    with enable_x64():
        x = np.asarray(jexpm.expm_lowrank(jnp.asarray(u), jnp.asarray(v)))
    err = rel_err(x, scipy.linalg.expm(u @ v))
    assert err <= 100 * U64, f"rel_err {err:.3e}"
