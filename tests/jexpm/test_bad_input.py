"""What every bad input gets: one test per row of the table in docs/guides/bad_input.md.

Each case is either a clear error raised before anything runs (its type, and a message
naming the function, the argument and its shape or value) or a defined numerical result.
The table in the guide and ``CASES`` below list the same case names, checked by
``test_the_guide_lists_every_case``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jexpm

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "bad_input.md"
EYE = np.eye(3)


def raises(kind: type[Exception], pattern: str) -> Callable[[Callable], None]:
    def check(call):
        with pytest.raises(kind, match=pattern):
            call()

    return check


def returns(check_value: Callable) -> Callable[[Callable], None]:
    def check(call):
        check_value(call())

    return check


def _nan_member_only(x):
    x = np.asarray(x)
    assert np.all(np.isnan(x[0])) and np.all(np.isfinite(x[1]))


def _dtype_is(dtype):
    def check(x):
        assert x.dtype == np.dtype(dtype), x.dtype
        np.testing.assert_allclose(np.asarray(x, np.float64), np.e * np.eye(2), rtol=1e-2)

    return check


def _poisoned(value, where=(0, 0, 1)):
    a = np.stack([EYE, EYE])
    a[where] = value
    return a


def _traced(f):
    return lambda: jax.jit(f)(1e-3)


CASES: dict[str, tuple[Callable, Callable]] = {
    # Shapes
    "non-square": (
        lambda: jexpm.expm(np.ones((2, 3))),
        raises(ValueError, r"expm: a must be a square matrix .* got shape \(2, 3\)"),
    ),
    "0-d": (
        lambda: jexpm.expm(np.float32(1)),
        raises(ValueError, r"expm: a must be a square .* got shape \(\)"),
    ),
    "1-d": (
        lambda: jexpm.expm(np.ones(3)),
        raises(ValueError, r"expm: a must be a square .* got shape \(3,\)"),
    ),
    "n = 0": (
        lambda: jexpm.expm(np.ones((4, 0, 0), np.float32)),
        returns(lambda x: x.shape == (4, 0, 0) or pytest.fail(str(x.shape))),
    ),
    "empty batch": (
        lambda: jexpm.expm(np.ones((0, 3, 3), np.float32)),
        returns(lambda x: x.shape == (0, 3, 3) or pytest.fail(str(x.shape))),
    ),
    "batch shapes of a and e": (
        lambda: jexpm.expm_frechet(np.ones((2, 3, 3)), np.ones((4, 3, 3))),
        raises(ValueError, r"expm_frechet: the batch shapes of a \(2, 3, 3\) and e \(4, 3, 3\)"),
    ),
    "batch shapes of a, b and t": (
        lambda: jexpm.expm_multiply(np.ones((2, 3, 3)), np.ones((4, 3))),
        raises(ValueError, r"expm_multiply: the batch shapes of a \(2, 3, 3\), b \(4, 3\)"),
    ),
    "rows of b": (
        lambda: jexpm.expm_multiply(EYE, np.ones(4)),
        raises(ValueError, r"expm_multiply: b .* must have n = 3 rows .* b \(4,\)"),
    ),
    "shapes of u and v": (
        lambda: jexpm.expm_lowrank(np.ones((3, 2)), np.ones((3, 3))),
        raises(ValueError, r"expm_lowrank: u and v must have shapes .* got \(3, 2\) and \(3, 3\)"),
    ),
    # Dtypes
    "strings": (
        lambda: jexpm.expm(np.array([["a", "b"], ["c", "d"]])),
        raises(TypeError, r"expm: a must hold numbers .* dtype <U1 with shape \(2, 2\)"),
    ),
    "objects": (
        lambda: jexpm.expm(np.array([[1, None], [2, 3]], dtype=object)),
        raises(TypeError, r"expm: a must hold numbers .* dtype object with shape \(2, 2\)"),
    ),
    "ragged lists": (
        lambda: jexpm.expm([[1.0, 2.0], [3.0]]),
        raises(TypeError, r"expm: a is not an array"),
    ),
    "non-numeric b or t": (
        lambda: jexpm.expm_multiply(EYE, np.ones(3), t="1"),
        raises(TypeError, r"expm_multiply: t must hold numbers .* shape \(\)"),
    ),
    "bool": (
        lambda: jexpm.expm(np.eye(2, dtype=bool)),
        returns(_dtype_is("float32")),
    ),
    **{
        name: (
            (lambda name=name: jexpm.expm(np.eye(2, dtype=name))),
            returns(_dtype_is("float32")),
        )
        for name in ("int8", "int16", "int32", "uint8", "uint16", "uint32")
    },
    "int64, uint64": (
        lambda: [jexpm.expm(np.eye(2, dtype=name)) for name in ("int64", "uint64")],
        # float64 under x64 (switched on for this case below), float32 without.
        returns(lambda xs: [_dtype_is("float64")(x) for x in xs]),
    ),
    "float16, bfloat16": (
        lambda: [jexpm.expm(jnp.eye(2, dtype=name)) for name in ("float16", "bfloat16")],
        returns(lambda xs: [_dtype_is(x.dtype)(x) for x in xs]),
    ),
    "mixed dtypes under strict promotion": (
        lambda: jexpm.expm_multiply(EYE.astype(np.float32), np.ones(3, np.float64)),
        raises(jax.dtypes.TypePromotionError, r"no available implicit dtype promotion path"),
    ),
    "integer input whose exponential underflows float32": (
        # SciPy promotes integers to float64 (entries near 1e-49 survive); JAX's rules
        # give float32, where they are 0: cast to float64 yourself to keep them.
        lambda: jexpm.expm(np.array([[-113, 0], [0, -113]], dtype=np.int16)),
        returns(lambda x: (x.dtype == np.float32 and np.all(x == 0)) or pytest.fail(str(x))),
    ),
    # Non-finite and extreme values
    "NaN in a": (lambda: jexpm.expm(_poisoned(np.nan)), returns(_nan_member_only)),
    "Inf in a": (lambda: jexpm.expm(_poisoned(np.inf)), returns(_nan_member_only)),
    "-Inf in a": (lambda: jexpm.expm(_poisoned(-np.inf)), returns(_nan_member_only)),
    "NaN or Inf in b": (
        lambda: jexpm.expm_multiply(np.stack([EYE, EYE]), _poisoned(np.nan, (0, 1))[:, :, 0]),
        returns(_nan_member_only),
    ),
    "NaN or Inf in t": (
        lambda: jexpm.expm_multiply(
            np.stack([EYE, EYE]), np.ones((2, 3)), t=np.array([np.inf, 1.0])
        ),
        returns(_nan_member_only),
    ),
    "overflow": (
        lambda: jexpm.expm(np.array([[[1000.0]], [[1.0]]])),
        returns(
            lambda x: (np.isinf(x[0, 0, 0]) and np.isclose(x[1, 0, 0], np.e)) or pytest.fail(x)
        ),
    ),
    "subnormal input": (
        lambda: jexpm.expm(np.array([[1e-310, 0.0], [0.0, 1e-310]])),
        returns(lambda x: np.testing.assert_array_equal(x, np.eye(2))),
    ),
    "subnormal result": (
        lambda: jexpm.expm(np.array([[-720.0]])),
        # e^-720 = 1.6e-313 is subnormal: XLA:CPU flushes it to 0.
        returns(lambda x: (abs(x[0, 0]) <= 2e-313) or pytest.fail(str(x))),
    ),
    "more squarings than max_squarings": (
        lambda: jexpm.expm(np.stack([EYE, 1e6 * EYE]), max_squarings=4),
        returns(lambda x: _nan_member_only(np.asarray(x)[::-1])),
    ),
    # Options
    "tol out of range": (  # 0, negative, 1 or more, NaN, Inf: see the test below
        lambda: jexpm.expm(EYE, tol=0.0),
        raises(ValueError, r"expm: tol must satisfy 0 < tol < 1, got 0.0"),
    ),
    "traced tol": (
        _traced(lambda tol: jexpm.expm(EYE, tol=tol)),
        raises(TypeError, r"expm: tol must be a Python number .* got DynamicJaxprTracer"),
    ),
    "negative max_squarings": (
        lambda: jexpm.expm(EYE, max_squarings=-1),
        raises(ValueError, r"expm: max_squarings must be >= 0, got -1"),
    ),
    "non-integer or traced max_squarings": (  # traced: see the test below
        lambda: jexpm.expm(EYE, max_squarings=1.5),
        raises(TypeError, r"expm: max_squarings must be a Python int or None, got float"),
    ),
    "unknown method": (
        lambda: jexpm.expm(EYE, method="pade"),
        raises(ValueError, r"expm: method must be one of \('opt15', 'ps', 'baseline'\)"),
    ),
    "upper_triangular not a bool": (
        lambda: jexpm.expm(EYE, upper_triangular="yes"),
        raises(TypeError, r"expm: upper_triangular must be None, True or False, got str"),
    ),
    "phi's k negative or not an int": (
        lambda: jexpm.phi(EYE, 1.5),
        raises(ValueError, r"phi: k must be a Python int >= 0, got 1.5"),
    ),
    "phi's unknown method": (
        lambda: jexpm.phi(EYE, 1, method="pade"),  # type: ignore[arg-type]
        raises(ValueError, r"phi: method must be one of \('squaring', 'opt15', 'ps', 'baseline'\)"),
    ),
    "orthogonal's max_norm not positive": (
        lambda: jexpm.orthogonal(EYE, max_norm=-1.0),
        raises(ValueError, r"orthogonal: max_norm must be positive, got -1.0"),
    ),
    # Size
    "huge batch": (
        lambda: jax.eval_shape(jexpm.expm, jax.ShapeDtypeStruct((2**31, 2, 2), jnp.float32)),
        returns(lambda x: x.shape == (2**31, 2, 2) or pytest.fail(str(x.shape))),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: str):
    call, check = CASES[case]
    with jax.enable_x64(True):
        check(call)


def test_each_out_of_range_tol_is_refused():
    for tol in (0.0, -1.0, 2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"expm: tol must satisfy 0 < tol < 1"):
            jexpm.expm(EYE, tol=tol)


def test_a_traced_max_squarings_is_refused():
    with pytest.raises(TypeError, match=r"max_squarings must be a Python int or None"):
        jax.jit(lambda m: jexpm.expm(EYE, max_squarings=m))(3)


def test_the_guide_lists_every_case():
    rows = re.findall(r"^\| \*\*(.+?)\*\* \|", GUIDE.read_text(), re.MULTILINE)
    assert sorted(rows) == sorted(CASES)
