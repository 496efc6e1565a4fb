"""JAX's own matrix-exponential tests, run against jexpm instead of jax.scipy.linalg.

Ported from JAX's tests/linalg_test.py (ScipyLinalgTest.testExpm, testIssue2131,
testExpmFrechet, testExpmGrad; https://github.com/jax-ml/jax, Apache-2.0), rewritten
as pytest functions. The reference is scipy.linalg, the comparison reproduces what
JAX's test harness (jax/_src/test_util.py, jax/_src/public_test_util.py) does:

* inputs come from ``jtu.rand_small``: ``RandomState.randn(*shape) * 1e-3`` cast to
  the dtype (complex: two independent real draws, ``re + 1j * im``), from a
  ``RandomState`` seeded with the adler32 hash of the test's name. Cast to an
  integer dtype these values truncate to 0, so JAX's integer cases are really
  exp(0) = I with integer-to-inexact promotion;
* ``_CheckAgainstNumpy``: the result and scipy's agree with ``np.testing.assert_allclose``
  at ``atol = rtol = max(tol(result dtype), tol(reference dtype))``, where ``tol`` is
  the explicit per-dtype override a JAX test passes, else JAX's default
  (float32/complex64 1e-6, float64/complex128 1e-15, integers 0), looked up after
  canonicalising the dtype (float64 counts as float32 when x64 is off); dtypes must
  match (after canonicalisation when x64 is off) unless the JAX test says otherwise;
* ``_CompileAndCheck``: ``jax.jit(f)`` agrees with ``f`` (same tolerances, dtypes),
  the second call with the same arguments does not retrace, and a fresh draw of the
  arguments again agrees. (JAX also counts op-by-op compilations on a second eager
  call; that check is left out.) The jitted wrappers are cached per function, so
  tests with the same shapes share compilations;
* gradients use the public ``jax.test_util.check_grads`` with JAX's tolerances.

JAX runs its tests with ``jax_numpy_rank_promotion="raise"`` (an autouse fixture
here) and skips 64-bit dtypes unless x64 is on: 64-bit cases run under
``jax.enable_x64(True)``, 32-bit ones with x64 off, and one int32 case also with
x64 on (where int32 must still promote to float32, as jax.numpy does).

JAX takes the full product n in (1, 4, 5, 20, 50, 100) (testExpmGrad: up to 50) x
batch in ((), (2,), (3, 4)) x all integer, float and complex dtypes, under both x64
settings. Every new shape, dtype and static option costs one to two seconds of XLA
compilation per function (and a JAX test compiles each function twice: eager and
under jit), which on a 2-core machine would take many minutes, so this file takes a
sample that covers every n, batch shape and dtype at least once (about 30 s on
2 idle cores):

* testExpm: (n, batch, dtype) = (1, (), int32), (1, (2,), int32 with x64 on: still
  float32), (4, (3, 4), complex64), (20, (), float64), (100, (), float32); its
  upper_triangular half: (5, (2,), complex128);
* testIssue2131: the unbatched inexact shapes of that sample, n in (20, 100), which
  reuse its compilations;
* testExpmFrechet: (20, float64) and (50, complex64), at all of JAX's target norms;
* testExpmGrad: (5, complex64), at all of JAX's target norms.

Target norms and tolerances are JAX's, unchanged.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from jax.test_util import check_grads

import jexpm

# JAX's default comparison tolerance per (canonical) dtype, public_test_util._default_tolerance.
_DEFAULT_TOL = {
    **{np.dtype(t): 0 for t in ("bool", "int8", "int16", "int32", "int64")},
    np.dtype(jnp.bfloat16): 1e-2,
    np.dtype("float16"): 1e-3,
    np.dtype("float32"): 1e-6,
    np.dtype("float64"): 1e-15,
    np.dtype("complex64"): 1e-6,
    np.dtype("complex128"): 1e-15,
}
_WIDE = (np.dtype("float64"), np.dtype("complex128"), np.dtype("int64"))


@pytest.fixture(autouse=True)
def _jax_test_config():
    """JAX's test suite raises on implicit rank promotion; so do these tests."""
    with jax.numpy_rank_promotion("raise"):
        yield


def _x64(dtype, x64=None):
    """x64 on for 64-bit dtypes (JAX skips them otherwise), else as asked (default off)."""
    if x64 is None:
        x64 = np.dtype(dtype) in _WIDE
    return jax.enable_x64(x64)


def _seeded(request) -> np.random.RandomState:
    """A RandomState seeded from the test's name, like JaxTestCase.rng()."""
    return np.random.RandomState(zlib.adler32(request.node.name.encode()))


def _rand_small(rng: np.random.RandomState, shape, dtype) -> np.ndarray:
    """jtu.rand_small: standard normal times 1e-3, cast to dtype (truncating for ints)."""
    dtype = np.dtype(dtype)

    def draw():
        return np.asarray(1e-3 * rng.randn(*shape)).astype(dtype)

    values = draw() + 1j * draw() if np.issubdtype(dtype, np.complexfloating) else draw()
    return np.asarray(values, dtype)


def _jnp_inexact(dtype) -> np.dtype:
    """The inexact dtype jax.numpy promotes ``dtype`` to (int32 -> float32 even with x64)."""
    return jax.eval_shape(jnp.sin, jax.ShapeDtypeStruct((), dtype)).dtype


def _tol(dtype, tol) -> float:
    """public_test_util.tolerance: an explicit value, else the per-dtype table."""
    if tol is not None and not isinstance(tol, dict):
        return tol
    table = {np.dtype(k): v for k, v in (tol or {}).items()}
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    return table.get(dtype, _DEFAULT_TOL[dtype])


def _same_dtype(actual, desired) -> None:
    a, d = np.dtype(actual), np.dtype(desired)
    if not jax.config.jax_enable_x64:
        a, d = jax.dtypes.canonicalize_dtype(a), jax.dtypes.canonicalize_dtype(d)
    assert a == d, f"dtype {actual} != expected {desired}"


def _assert_close(actual, desired, *, check_dtypes=True, tol=None) -> None:
    """JaxTestCase.assertAllClose with atol = rtol = tol (as the ported tests pass them)."""
    if isinstance(actual, (tuple, list)):
        assert isinstance(desired, (tuple, list)), f"expected a sequence, got {type(desired)}"
        assert len(actual) == len(desired)
        for x, y in zip(actual, desired, strict=True):
            _assert_close(x, y, check_dtypes=check_dtypes, tol=tol)
        return
    if check_dtypes:
        _same_dtype(actual.dtype, desired.dtype)
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, f"shape {actual.shape} != {desired.shape}"
    bound = max(_tol(actual.dtype, tol), _tol(desired.dtype, tol))
    # JAX passes atol and rtol only when nonzero (numpy's own rtol=1e-7 applies otherwise).
    kw = {"atol": bound, "rtol": bound} if bound else {}
    np.testing.assert_allclose(actual, desired, **kw)


def _check_against_scipy(reference, fun, args_maker, *, check_dtypes=True, tol=None) -> None:
    """_CheckAgainstNumpy: fun(*args) against the scipy reference."""
    args = args_maker()
    _assert_close(fun(*args), reference(*args), check_dtypes=check_dtypes, tol=tol)


@functools.cache
def _jitted(fun, **kwargs):
    """jax.jit of fun(*args, **kwargs) and a list counting its traces; cached per function."""
    traces = [0]

    def traced(*args):
        traces[0] += 1
        return fun(*args, **kwargs)

    return jax.jit(traced), traces


def _compile_and_check(fun, args_maker, *, check_dtypes=True, tol=None, **kwargs) -> None:
    """_CompileAndCheck: jit(fun) equals fun, and a cached call does not retrace."""
    eager = functools.partial(fun, **kwargs)
    compiled, traces = _jitted(fun, **kwargs)
    args = args_maker()
    expected = eager(*args)
    first = compiled(*args)
    count = traces[0]
    second = compiled(*args)
    assert traces[0] == count, "jit retraced on an identical call"
    _assert_close(first, expected, check_dtypes=check_dtypes, tol=tol)
    _assert_close(second, expected, check_dtypes=check_dtypes, tol=tol)

    args = args_maker()
    expected = eager(*args)
    again = compiled(*args)
    assert traces[0] == count, "jit retraced for same-shaped arguments"
    _assert_close(again, expected, check_dtypes=check_dtypes, tol=tol)


def _scipy_expm_promoted(a: np.ndarray) -> np.ndarray:
    """scipy.linalg.expm of ``a`` promoted to inexact the way jax.numpy promotes it."""
    return sl.expm(np.asarray(a, _jnp_inexact(a.dtype)))


# ---------------------------------------------------------------- testExpm

# (n, batch shape, dtype, x64); x64 None: on exactly for 64-bit dtypes.
EXPM_CASES = [
    (1, (), "int32", None),
    (1, (2,), "int32", True),
    (4, (3, 4), "complex64", None),
    (20, (), "float64", None),
    (100, (), "float32", None),
]
TRIU_CASES = [(5, (2,), "complex128", None)]


def _case_id(case) -> str:
    n, batch, dtype, x64 = case
    shape = "x".join(map(str, (*batch, n, n)))
    return f"{dtype}-{shape}" + ("-x64" if x64 else "")


def _expm_test(request, n, batch, dtype, x64, **kwargs):
    with _x64(dtype, x64):
        rng = _seeded(request)
        prepare = np.triu if kwargs.get("upper_triangular") else np.asarray

        def args_maker():
            return [prepare(_rand_small(rng, (*batch, n, n), dtype))]

        fun = functools.partial(jexpm.expm, **kwargs)
        _check_against_scipy(_scipy_expm_promoted, fun, args_maker)
        _compile_and_check(jexpm.expm, args_maker, **kwargs)


@pytest.mark.parametrize("case", EXPM_CASES, ids=_case_id)
def test_expm(request, case):
    """testExpm, general half: expm of rand_small matrices against scipy, eager and jit."""
    _expm_test(request, *case)


@pytest.mark.parametrize("case", TRIU_CASES, ids=_case_id)
def test_expm_upper_triangular(request, case):
    """testExpm, upper_triangular=True half: triu inputs, same scipy reference."""
    _expm_test(request, *case, upper_triangular=True)


# ---------------------------------------------------------------- testIssue2131

# The unbatched inexact shapes of EXPM_CASES: their compilations are shared.
ISSUE2131_CASES = [
    (n, dtype, x64)
    for n, batch, dtype, x64 in EXPM_CASES
    if batch == () and np.issubdtype(np.dtype(dtype), np.inexact)
]


@pytest.mark.parametrize(("n", "dtype", "x64"), ISSUE2131_CASES)
def test_issue2131_zero_matrix(n, dtype, x64):
    """testIssue2131: expm of the zero matrix is the identity (no NaN from a zero norm)."""
    with _x64(dtype, x64):

        def args_maker():
            return [np.zeros((n, n), dtype)]

        _check_against_scipy(sl.expm, jexpm.expm, args_maker)
        _compile_and_check(jexpm.expm, args_maker)


# ---------------------------------------------------------------- testExpmFrechet

# JAX's target 1-norms and tolerance overrides (a TODO there hopes for 1e-15 at 64 bits).
_NORMS_32 = (4.0e-1, 1.0, 3.0)
_NORMS_64 = (1.0e-2, 2.0e-1, 9.0e-1, 2.0, 3.0)
_FRECHET_TOL_64 = {np.dtype("float64"): 1e-14, np.dtype("complex128"): 1e-14}


def _target_norms(dtype):
    return _NORMS_64 if np.dtype(dtype) in _WIDE else _NORMS_32


FRECHET_CASES = [(20, "float64"), (50, "complex64")]


@pytest.mark.parametrize(("n", "dtype"), FRECHET_CASES)
def test_expm_frechet(request, n, dtype):
    """testExpmFrechet: expm_frechet against scipy at JAX's target norms, both outputs."""
    tol = _FRECHET_TOL_64 if np.dtype(dtype) in _WIDE else None
    with _x64(dtype):
        rng = _seeded(request)
        for norm in _target_norms(dtype):

            def args_maker(norm=norm):
                a = _rand_small(rng, (n, n), dtype)
                a = a / np.linalg.norm(a, 1) * norm
                return [a, _rand_small(rng, (n, n), dtype)]

            for compute_expm in (True, False):

                def reference(a, e, compute_expm=compute_expm):
                    return sl.expm_frechet(a, e, compute_expm=compute_expm)

                fun = functools.partial(jexpm.expm_frechet, compute_expm=compute_expm)
                _check_against_scipy(reference, fun, args_maker, check_dtypes=False, tol=tol)
                _compile_and_check(
                    jexpm.expm_frechet, args_maker, check_dtypes=False, compute_expm=compute_expm
                )


# ---------------------------------------------------------------- testExpmGrad

# JAX's tolerances (loose because of finite differences; float and complex are coupled
# through the inner product of check_vjp).
_GRAD_TOL = {
    np.dtype("float32"): 0.02,
    np.dtype("complex64"): 0.02,
    np.dtype("float64"): 1e-4,
    np.dtype("complex128"): 1e-4,
}

GRAD_CASES = [(5, "complex64")]


@pytest.mark.parametrize(("n", "dtype"), GRAD_CASES)
def test_expm_grad(request, n, dtype):
    """testExpmGrad: forward- and reverse-mode derivatives against finite differences."""

    def expm(x):
        return jexpm.expm(x, upper_triangular=False, max_squarings=16)

    with _x64(dtype):
        a = _rand_small(_seeded(request), (n, n), dtype)
        for norm in _target_norms(dtype):
            a = a / np.linalg.norm(a, 1) * norm
            check_grads(expm, (a,), order=1, modes=["fwd", "rev"], atol=_GRAD_TOL, rtol=_GRAD_TOL)
