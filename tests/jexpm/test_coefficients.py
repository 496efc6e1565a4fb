"""The coefficient tables and evaluation formulas, against the Taylor series.

The tables published by Sastre (LAA 2018) and Sastre et al. (arXiv:2512.20777, 2025, with
the authors' code hipersc/MatrixFunctions) are typed in here independently of
jexpm/_coefficients.py, expanded symbolically (mpmath at 50 digits, plain polynomial
arithmetic) and compared with 1/k! (exp) and 1/(k+1)! (phi1). The implementation is then
read off directly: a polynomial p evaluated at the nilpotent shift matrix J has its
coefficients p_k on row 0 (J^k has ones on the k-th superdiagonal), so each formula of
jexpm._approximants is checked as it is executed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import jexpm
from jexpm import _coefficients as C
from jexpm._approximants import TAYLOR

DPS = 50

# ---------------------------------------------------------------------------------
# Typed in as published (Sastre 2018; Sastre et al. 2025 and their code): decimal strings,
# c1 first.

PUB_EXP_4 = ["1", "1", "1/2", "1/3", "1/4"]
PUB_PHI1_4 = ["1", "1/2", "1/6", "1/4", "1/5"]
PUB_EXP_8 = [
    "4.980119205559973e-03", "1.992047682223989e-02", "7.665265321119147e-02",
    "8.765009801785554e-01", "1.225521150112075e-01", "2.974307204847627", "0.5", "1", "1",
]  # fmt: skip
PUB_PHI1_8 = [
    "1.660039735186658e-03", "7.470178808339960e-03", "2.709974334395560e-02",
    "4.500782732024826e-01", "5.880731295195394e-02", "2.034592904871945", "1/6", "0.5", "1",
]  # fmt: skip
PUB_EXP_15 = [
    "4.018761610201036e-04", "2.945531440279683e-03", "-8.709066576837676e-03",
    "4.017568440673568e-01", "3.230762888122312e-02", "5.768988513026145",
    "2.338576034271299e-02", "2.381070373870987e-01", "2.224209172496374",
    "-5.792361707073261", "-4.130276365929783e-02", "1.040801735231354e+01",
    "-6.331712455883370e+01", "3.484665863364574e-01", "1", "1",
]  # fmt: skip
PUB_PHI1_15 = [
    "1.999637069327334e-04", "1.494400064180480e-03", "-4.364865621286775e-03",
    "2.294130909981213e-01", "1.868111448270906e-02", "3.650752775284885",
    "2.113847295209054e-02", "7.709174196270302e-02", "1.005952341579399",
    "3.134311599789341", "-6.535520701550694e-02", "5.711871755550578",
    "-1.928484398466562e+01", "1.116706435878065e-01", "0.5", "1",
]  # fmt: skip
# The published phi1 15+ set with c10's sign flipped (published with the wrong sign).
PUB_PHI1_15_FIXED = [*PUB_PHI1_15[:9], "-" + PUB_PHI1_15[9], *PUB_PHI1_15[10:]]
PUB_EXP_16 = "2.608368698098256e-14"  # degree-16 coefficient of exp's 15+
PUB_LOG2_B16_EXP = -45.38856141351141


def _mp(x: str) -> mpmath.mpf:
    if "/" in x:
        num, den = x.split("/")
        return mpmath.mpf(num) / mpmath.mpf(den)
    return mpmath.mpf(x)


def _flt(x: str) -> float:
    return float(_mp(x)) if "/" in x else float(x)


# ---------------------------------------------------------------------------------
# Polynomials as coefficient lists (index = degree), in mpmath.


def _add(*ps):
    out = [mpmath.mpf(0)] * max(len(p) for p in ps)
    for p in ps:
        for k, a in enumerate(p):
            out[k] += a
    return out


def _mul(p, q):
    out = [mpmath.mpf(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _sc(c, p):
    return [c * a for a in p]


def _poly_I():
    return [mpmath.mpf(1)]


def _poly_A():
    return [mpmath.mpf(0), mpmath.mpf(1)]


def _poly_A2():
    return [mpmath.mpf(0), mpmath.mpf(0), mpmath.mpf(1)]


def expand4(c):
    """T = ((c5 A2 + A) c4 + I)(c3 A2) + c2 A + c1 I  (Sastre et al. 2025; c1 = 1 = I)."""
    c1, c2, c3, c4, c5 = (_mp(x) for x in c)
    eye, A, A2 = _poly_I(), _poly_A(), _poly_A2()
    left = _add(_sc(c4, _add(_sc(c5, A2), A)), eye)
    return _add(_mul(left, _sc(c3, A2)), _sc(c2, A), _sc(c1, eye))


def expand8(c):
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = (_mp(x) for x in c)
    eye, A, A2 = _poly_I(), _poly_A(), _poly_A2()
    y0 = _mul(A2, _add(_sc(c1, A2), _sc(c2, A)))
    t = _mul(_add(y0, _sc(c3, A2), _sc(c4, A)), _add(y0, _sc(c5, A2)))
    return _add(t, _sc(c6, y0), _sc(c7, A2), _sc(c8, A), _sc(c9, eye))


def expand15(c):
    c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16 = (_mp(x) for x in c)
    eye, A, A2 = _poly_I(), _poly_A(), _poly_A2()
    y0 = _mul(A2, _add(_sc(c1, A2), _sc(c2, A)))
    y1 = _add(
        _mul(_add(y0, _sc(c3, A2), _sc(c4, A)), _add(y0, _sc(c5, A2))),
        _sc(c6, y0),
        _sc(c7, A2),
    )
    t = _mul(_add(y1, _sc(c8, A2), _sc(c9, A)), _add(y1, _sc(c10, y0), _sc(c11, A)))
    return _add(t, _sc(c12, y1), _sc(c13, y0), _sc(c14, A2), _sc(c15, A), _sc(c16, eye))


def taylor_mp(k: int, shift: int) -> mpmath.mpf:
    return 1 / mpmath.factorial(k + shift)


def rel_errors(poly, degree: int, shift: int) -> list[float]:
    """|p_k (k + shift)! - 1| for k = 0..degree."""
    return [float(abs(poly[k] / taylor_mp(k, shift) - 1)) for k in range(degree + 1)]


# ---------------------------------------------------------------------------------
# The published tables, expanded.


@pytest.mark.parametrize(
    "table, expand, degree, shift, bound",
    [
        (PUB_EXP_4, expand4, 4, 0, 0.0),
        (PUB_PHI1_4, expand4, 4, 1, 0.0),
        (PUB_EXP_8, expand8, 8, 0, 1e-15),
        (PUB_PHI1_8, expand8, 8, 1, 1e-15),
        (PUB_EXP_15, expand15, 15, 0, 1e-15),
    ],
    ids=["exp4", "phi1_4", "exp8", "phi1_8", "exp15"],
)
def test_published_tables_match_taylor(table, expand, degree, shift, bound):
    with mpmath.workdps(DPS):
        poly = expand(table)
        errs = rel_errors(poly, degree, shift)
        # The formula's degree is exactly its order (15+ reaches 16).
        assert len(poly) - 1 == (16 if degree == 15 else degree)
    assert max(errs) <= bound, errs


def test_exp15_degree16_coefficient():
    with mpmath.workdps(DPS):
        poly = expand15(PUB_EXP_15)
        c16 = poly[16]
        assert float(abs(c16 / mpmath.mpf(PUB_EXP_16) - 1)) < 1e-14
        exact16 = 1 / mpmath.factorial(16)
        assert float(abs(exact16 / mpmath.mpf("4.779477332387385e-14") - 1)) < 1e-15
        log2_b16 = float(mpmath.log(abs(c16 - exact16), 2))
    assert log2_b16 == pytest.approx(PUB_LOG2_B16_EXP, abs=1e-12)
    assert log2_b16 == pytest.approx(C.LOG2_B16_EXP, abs=1e-12)
    assert PUB_LOG2_B16_EXP == C.LOG2_B16_EXP


def test_published_phi1_15_is_wrong_and_sign_of_c10_fixes_it():
    with mpmath.workdps(DPS):
        published = rel_errors(expand15(PUB_PHI1_15), 15, 1)
        fixed_poly = expand15(PUB_PHI1_15_FIXED)
        fixed = rel_errors(fixed_poly, 15, 1)
        log2_b16 = float(mpmath.log(abs(fixed_poly[16] - taylor_mp(16, 1)), 2))
    # As published: some coefficients off by more than 100% (worst: 157%).
    assert max(published) > 1.0
    assert round(max(published), 2) == 1.57, published
    assert int(np.argmax(published)) == 5
    # Degrees 0..3 and 13..15 do not involve c10 and are right either way.
    assert max(published[:4] + published[13:]) < 1e-15
    # With c10's sign flipped every degree 0..15 matches 1/(k+1)! (to 4e-16).
    assert max(fixed) < 4e-16, fixed
    assert log2_b16 == pytest.approx(C.LOG2_B16_PHI1, abs=1e-12)


@pytest.mark.parametrize(
    "lib, pub",
    [
        (C.EXP_4, PUB_EXP_4),
        (C.PHI1_4, PUB_PHI1_4),
        (C.EXP_8, PUB_EXP_8),
        (C.PHI1_8, PUB_PHI1_8),
        (C.EXP_15, PUB_EXP_15),
    ],
    ids=["exp4", "phi1_4", "exp8", "phi1_8", "exp15"],
)
def test_library_tables_equal_published(lib, pub):
    assert len(lib) == len(pub)
    assert [float(x) for x in lib] == [_flt(x) for x in pub]


def test_library_phi1_15_is_published_with_c10_corrected():
    pub = [_flt(x) for x in PUB_PHI1_15]
    lib = [float(x) for x in C.PHI1_15]
    assert len(lib) == 16
    assert lib[:9] == pub[:9]
    assert lib[10:] == pub[10:]
    assert lib[9] == -pub[9] == -3.134311599789341
    assert C.PHI1_15_PUBLISHED_C10 == pub[9]


def test_library_log2_b_tables():
    """Each scheme bounds terms m+1 and m+2 by 1/(p + shift)!, except b16 of 15+."""
    for (method, family), scheme in TAYLOR.items():
        assert scheme.method == method and scheme.family == family
        shift = {"exp": 0, "phi1": 1}[family]
        assert scheme.shift == shift
        assert len(scheme.log2_b) == len(scheme.orders)
        for m, (b1, b2) in zip(scheme.orders, scheme.log2_b, strict=True):
            want = [-math.log2(math.factorial(p + shift)) for p in (m + 1, m + 2)]
            if method == "opt15" and m == 15:
                want[0] = {"exp": PUB_LOG2_B16_EXP, "phi1": C.LOG2_B16_PHI1}[family]
            assert b1 == pytest.approx(want[0], abs=1e-12), (method, family, m)
            assert b2 == pytest.approx(want[1], abs=1e-12), (method, family, m)


# ---------------------------------------------------------------------------------
# The polynomial the implementation evaluates, read off at the shift matrix.

N_SHIFT = 20


def _implemented_polynomial(scheme, i: int) -> np.ndarray:
    with jax.enable_x64(True):
        j = jnp.eye(N_SHIFT, k=1, dtype=jnp.float64)
        j2 = j @ j
        t = scheme.first(j) if i == 0 else scheme.formulas[i - 1]((j, j2), scheme.matmul)
        t = np.asarray(t)
    assert t.dtype == np.float64
    row = t[0]
    # A polynomial in J is upper triangular Toeplitz: every row is row 0 shifted (up to
    # rounding, which differs from row to row; structural zeros are exact).
    toeplitz = sum(row[k] * np.eye(N_SHIFT, k=k) for k in range(N_SHIFT))
    np.testing.assert_allclose(t, toeplitz, rtol=8 * np.finfo(np.float64).eps, atol=0)
    return row


@pytest.mark.parametrize("key", sorted(TAYLOR), ids="-".join)
def test_implemented_formulas_are_taylor(key):
    method, family = key
    scheme = TAYLOR[key]
    shift = {"exp": 0, "phi1": 1}[family]
    want_orders = {"opt15": (1, 2, 4, 8, 15), "ps": (1, 2, 4, 6, 9, 12, 16)}[method]
    assert scheme.orders == want_orders
    assert len(scheme.formulas) == len(scheme.orders) - 1
    eps = np.finfo(np.float64).eps
    taylor = np.array([1.0 / math.factorial(k + shift) for k in range(N_SHIFT)])
    for i, m in enumerate(scheme.orders):
        row = _implemented_polynomial(scheme, i)
        rel = np.abs(row[: m + 1] / taylor[: m + 1] - 1)
        if method == "opt15" and m == 15:
            # 15+: exact to degree 15, degree 16 is the approximate c16.
            rel = rel[:16]
            with mpmath.workdps(DPS):
                table = PUB_EXP_15 if family == "exp" else PUB_PHI1_15_FIXED
                c16 = float(expand15(table)[16])
            assert row[16] == pytest.approx(c16, rel=1e-12), (key, row[16])
            assert abs(row[16] / taylor[16] - 1) > 0.1  # really approximate
            degree = 16
        else:
            degree = m
        assert np.max(rel) <= 8 * eps, (key, m, rel / eps)
        np.testing.assert_array_equal(row[degree + 1 :], 0.0, err_msg=f"{key} m={m}")


# ---------------------------------------------------------------------------------
# Order thresholds theta_m at tol = 1e-8, the tolerance Sastre et al. (2025) fix, to the
# digits given (worst case ||A^k|| = ||A||^k).

THRESHOLDS_1E8 = {
    "opt15": {1: "1.4e-4", 2: "3.9e-3", 4: "6.5e-2", 8: "0.54", 15: "2.26"},
    "ps": {6: "0.24", 9: "0.72", 12: "1.37", 16: "2.43"},
}


def theta(scheme, i: int, tol: float) -> float:
    """Largest ||A|| for which both bounds b_p ||A||^p of order i are <= tol."""
    m = scheme.orders[i]
    lt = math.log2(tol)
    return 2.0 ** min((lt - b) / (m + 1 + j) for j, b in enumerate(scheme.log2_b[i]))


def _half_ulp_of_printed(text: str) -> float:
    mantissa = text.lower().split("e")[0]
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (exponent - decimals)


@pytest.mark.parametrize("method", ["opt15", "ps"])
def test_thresholds_at_1e8(method):
    scheme = TAYLOR[method, "exp"]
    for m, printed in THRESHOLDS_1E8[method].items():
        value = theta(scheme, scheme.orders.index(m), 1e-8)
        assert abs(value - float(printed)) <= _half_ulp_of_printed(printed), (method, m, value)
    # Thresholds increase with the order (cheapest first is the right search order).
    ths = [theta(scheme, i, 1e-8) for i in range(len(scheme.orders))]
    assert ths == sorted(ths)


# ---------------------------------------------------------------------------------
# Matrix products per order, A2 included: opt15 as in Sastre et al. (2025), ps the
# Paterson-Stockmeyer counts.

PRODUCTS = {
    "opt15": {1: 0, 2: 1, 4: 2, 8: 3, 15: 4},
    "ps": {1: 0, 2: 1, 4: 2, 6: 3, 9: 4, 12: 5, 16: 6},
}


@pytest.mark.parametrize("key", sorted(TAYLOR), ids="-".join)
def test_product_counts_by_counting(key):
    """Count the matmul calls each formula makes (plus A2 for orders >= 2)."""
    method, _ = key
    scheme = TAYLOR[key]
    assert dict(zip(scheme.orders, scheme.products, strict=True)) == PRODUCTS[method]
    calls = []

    def counting(a, b):
        calls.append(1)
        return scheme.matmul(a, b)

    a = jnp.eye(4, k=1) * 0.1
    a2 = a @ a
    for i, m in enumerate(scheme.orders):
        calls.clear()
        if i == 0:
            scheme.first(a)
            counted = 0
        else:
            scheme.formulas[i - 1]((a, a2), counting)
            counted = len(calls) + 1  # A2
        assert counted == PRODUCTS[method][m], (key, m, counted)


def test_opt15_reaches_higher_degree_than_ps_at_equal_cost():
    """With 4 products PS reaches degree 9, opt15 degree 15 (Sastre et al. 2025)."""
    opt = TAYLOR["opt15", "exp"]
    ps = TAYLOR["ps", "exp"]
    assert ps.orders[ps.products.index(4)] == 9
    assert opt.orders[opt.products.index(4)] == 15


@pytest.mark.parametrize("method", ["opt15", "ps"])
def test_product_counts_reported_by_expm(method):
    """Through the public API: products = PRODUCTS count + s, one call per order."""
    scheme = TAYLOR[method, "exp"]
    with jax.enable_x64(True):
        for i, m in enumerate(scheme.orders):
            # A diagonal matrix has ||A^k|| = ||A||^k: just below theta picks order m.
            x = 0.999 * theta(scheme, i, 1e-8)
            a = jnp.diag(jnp.array([x, -0.5 * x, 0.25 * x], dtype=jnp.float64))
            _, info = jexpm.expm(a, tol=1e-8, method=method, return_info=True)
            assert int(info.order) == m
            assert int(info.squarings) == 0
            assert int(info.products) == PRODUCTS[method][m]
