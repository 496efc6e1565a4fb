"""Order and scaling selection, asserted through ``return_info``.

Every order of every method is reached on purpose: a diagonal matrix diag(x, -x/2, x/4)
has ||A^k||_1 = x^k, the worst case the thresholds are defined for, so x just below /
just above the threshold theta_m (computed from the scheme's log2_b) must select m / the
next order. The authors' rule (Sastre et al., arXiv:2512.20777, 2025) is then implemented
independently in NumPy and compared with the library, matrix by matrix, on random
Gaussian and strongly non-normal input.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

import jexpm
from jexpm import _algorithm as alg
from jexpm._approximants import TAYLOR
from tests.helpers import norm1, random_with_norm

# Matrix products (A2 included) per method and order: opt15 as in Sastre et al. (2025),
# ps the Paterson-Stockmeyer counts.
PRODUCTS = {
    "opt15": {1: 0, 2: 1, 4: 2, 8: 3, 15: 4},
    "ps": {1: 0, 2: 1, 4: 2, 6: 3, 9: 4, 12: 5, 16: 6},
}
# Products per squaring step: T <- T T (exp); phi1(2X) = phi1 + phi1 X phi1 / 2 (phi1).
SQUARING = {"exp": 1, "phi1": 2}
FUNCS = {"exp": jexpm.expm, "phi1": jexpm.phi1}

# dtype, tol passed (None: the default, the unit roundoff), the tol that means.
TOLS = [
    ("float64", None, 2.0**-53),
    ("float32", None, 2.0**-24),
    ("float64", 1e-8, 1e-8),
]
TOL_IDS = ["f64-default", "f32-default", "f64-1e-8"]
# Relative distance from a threshold: far above float32 rounding of log2 norms (x 17).
DELTA = {"float64": 1e-7, "float32": 1e-4}


def theta(scheme, i: int, log2_tol: float) -> float:
    """Largest x = ||A|| with both bounds b_p x^p of order index i <= tol (worst case)."""
    m = scheme.orders[i]
    return 2.0 ** min((log2_tol - b) / (m + 1 + j) for j, b in enumerate(scheme.log2_b[i]))


def worst_case(x: float, dtype: str) -> np.ndarray:
    """A matrix with ||A^k||_1 = x^k for every k."""
    return np.diag([x, -0.5 * x, 0.25 * x]).astype(dtype)


def run(family, a, tol, method):
    """Full call (result and info), x64 on so float64 input stays float64."""
    with jax.enable_x64(True):
        out, info = FUNCS[family](jnp.asarray(a), tol=tol, method=method, return_info=True)
        out = np.asarray(out)
        info = tuple(np.asarray(v) for v in info)
    assert out.dtype == np.asarray(a).dtype
    return out, info


@functools.cache
def _info_fn(family, method, tol, per_matrix):
    def info(a):
        return FUNCS[family](a, tol=tol, method=method, return_info=True)[1]

    # lax.map makes one unbatched call per matrix, so the order is not shared.
    return jax.jit((lambda xs: jax.lax.map(info, xs)) if per_matrix else info)


def infos(family, mats, tol, method, per_matrix=True):
    """Info only (the result is not needed, which keeps compilation short)."""
    with jax.enable_x64(True):
        a = jnp.asarray(np.stack(mats) if per_matrix else mats)
        out = _info_fn(family, method, tol, per_matrix)(a)
        return tuple(np.asarray(v) for v in out)


def assert_infos(info, want, what):
    got = list(zip(*(v.tolist() for v in info), strict=True))
    bad = [(w, g, note) for w, g, note in zip(want, got, what, strict=True) if tuple(w) != g]
    assert not bad, "(want, got, case): " + repr(bad[:8])


# ---------------------------------------------------------------------------------
# Every order, just below and just above its threshold; the top order's squarings.


@pytest.mark.parametrize("dtype, tol, tol_value", TOLS, ids=TOL_IDS)
@pytest.mark.parametrize("family", ["exp", "phi1"])
@pytest.mark.parametrize("method", ["opt15", "ps"])
def test_every_order_at_its_threshold(method, family, dtype, tol, tol_value):
    scheme = TAYLOR[method, family]
    orders = scheme.orders
    top = len(orders) - 1
    thetas = [theta(scheme, i, math.log2(tol_value)) for i in range(len(orders))]
    d = DELTA[dtype]
    assert all(t1 * (1 - 10 * d) > t0 for t0, t1 in itertools.pairwise(thetas))
    cases = []  # (x, (order, s, products), label)
    for i, m in enumerate(orders):
        cases.append((thetas[i] * (1 - d), (m, 0, PRODUCTS[method][m]), f"below theta_{m}"))
        if i < top:
            n = orders[i + 1]
            cases.append((thetas[i] * (1 + d), (n, 0, PRODUCTS[method][n]), f"above theta_{m}"))
    # The top order: s = ceil(log2(x / theta_top)) in the worst case, switching at 2^k theta.
    m = orders[top]
    for k in (0, 1, 2, 5, 13) + (() if dtype == "float32" else (40,)):
        for x, s in ((thetas[top] * 2.0**k * (1 - d), k), (thetas[top] * 2.0**k * (1 + d), k + 1)):
            want = (m, s, PRODUCTS[method][m] + SQUARING[family] * s)
            cases.append((x, want, f"top x = 2^{k} theta {x:.6g}"))
    info = infos(family, [worst_case(x, dtype) for x, _, _ in cases], tol, method)
    assert_infos(info, [w for _, w, _ in cases], [c for _, _, c in cases])


def test_order1_uses_norm_of_a_only():
    """Order 1 is decided from ||A|| alone; order 2 and up use ||A^2||.

    A nilpotent A (A^2 = 0) of any norm fails order 1 (its bounds use ||A||) but passes
    order 2 with no scaling (its bounds use ||A^2|| = 0).
    """
    t1 = theta(TAYLOR["opt15", "exp"], 0, math.log2(1e-8))
    mats, want = [], []
    for x in (2 * t1, 1.0, 1e3, 1e30):
        a = np.zeros((3, 3))
        a[0, 2], a[1, 2] = x, -x
        mats.append(a)
        want.append((2, 0, 1))
    mats.append(np.full((3, 3), t1 / 3 * 0.999))  # ||A|| just under theta_1
    want.append((1, 0, 0))
    for method in ("opt15", "ps"):
        assert_infos(infos("exp", mats, 1e-8, method), want, [method] * len(mats))


# ---------------------------------------------------------------------------------
# The authors' rule (Sastre et al. 2025; code hipersc/MatrixFunctions), implemented
# independently, with their bounds ||A^p|| <= products of ||A|| and ||A2||.

LOG2_B16_EXP = -45.38856141351141  # log2 |c16 - 1/16!| of exp's 15+


def _log2_inv_fact(p: int) -> float:
    return -math.log2(math.factorial(p))


# Per order m: products, and for p = m+1, m+2: (log2 b_p, power of ||A2||, power of ||A||).
AUTHORS_OPT15 = [
    (2, 1, [(_log2_inv_fact(3), 1, 1), (_log2_inv_fact(4), 2, 0)]),
    (4, 2, [(_log2_inv_fact(5), 2, 1), (_log2_inv_fact(6), 3, 0)]),
    (8, 3, [(_log2_inv_fact(9), 4, 1), (_log2_inv_fact(10), 5, 0)]),
    (15, 4, [(LOG2_B16_EXP, 8, 0), (_log2_inv_fact(17), 8, 1)]),
]


def _log2(x: float) -> float:
    return math.log2(x) if x > 0 else -math.inf


def authors_rule(a: np.ndarray, tol: float) -> tuple[int, int, int]:
    """(m, s, products) by the authors' rule in the 1-norm, computed in float64."""
    lt = math.log2(tol)
    l1 = _log2(float(norm1(a)))
    # Order 1 from ||A|| alone (bounds ||A||^2 / 2!, ||A||^3 / 3!), before forming A^2.
    if _log2_inv_fact(2) + 2 * l1 <= lt and _log2_inv_fact(3) + 3 * l1 <= lt:
        return 1, 0, 0
    l2 = _log2(float(norm1(a @ a)))
    for m, products, bounds in AUTHORS_OPT15:
        logs = [b + k2 * l2 + (k1 * l1 if k1 else 0.0) for b, k2, k1 in bounds]
        if all(v <= lt for v in logs):
            return m, 0, products
    s = max(math.ceil((v - lt) / (m + 1 + i)) for i, v in enumerate(logs))
    return m, s, products + s


# The authors' Paterson-Stockmeyer rule (select_m_s_expm_ps): order m = j k stores A^j,
# formed as A^(j-1) A (one product) when the search first reaches it, and bounds
# ||A^(m+1)|| <= ||A^j||^k ||A||, ||A^(m+2)|| <= ||A^j||^k ||A^2||.
AUTHORS_PS = [(2, 2, 1), (4, 2, 2), (6, 3, 2), (9, 3, 3), (12, 4, 3), (16, 4, 4)]  # (m, j, k)


def authors_ps_rule(a: np.ndarray, tol: float) -> tuple[int, int, int]:
    """(m, s, products) by the authors' PS rule in the 1-norm, in float64 (s not capped)."""
    lt = math.log2(tol)
    l1 = _log2(float(norm1(a)))
    if _log2_inv_fact(2) + 2 * l1 <= lt and _log2_inv_fact(3) + 3 * l1 <= lt:
        return 1, 0, 0
    powers = {1: a}
    logs = {1: l1}
    for m, j, k in AUTHORS_PS:
        if j not in powers:
            powers[j] = powers[j - 1] @ a
            logs[j] = _log2(float(norm1(powers[j])))
        errors = [
            _log2_inv_fact(m + 1) + k * logs[j] + logs[1],
            _log2_inv_fact(m + 2) + k * logs[j] + logs[2],
        ]
        # Products: the powers A^2..A^j, then k - 1 Horner steps.
        products = (j - 1) + (k - 1)
        if all(e <= lt for e in errors):
            return m, 0, products
    s = max(math.ceil((e - lt) / (16 + 1 + i)) for i, e in enumerate(errors))
    return 16, s, products + s


def refined_rule(a: np.ndarray, tol: float) -> tuple[int, int, int]:
    """The library's refinement of the authors' rule, re-implemented for checking.

    When 15+ needs more than jexpm._algorithm.REFINE_MIN_SQUARINGS squarings and A is
    strongly non-normal (2 log2||A|| - log2||A^2|| above
    jexpm._algorithm.REFINE_GAP_BITS), ||A^16|| <= ||A^8||^2 and ||A^17|| <= ||A^8||
    ||A^9|| may allow fewer squarings, at REFINE_PRODUCTS extra products (A^4, A^8, A^9).
    """
    m, s, products = authors_rule(a, tol)
    l1, l2 = _log2(float(norm1(a))), _log2(float(norm1(a @ a)))
    if s <= alg.REFINE_MIN_SQUARINGS or not 2 * l1 - l2 > alg.REFINE_GAP_BITS:
        return m, s, products
    a8 = np.linalg.matrix_power(a, 8)
    l8 = min(_log2(float(norm1(a8))), 4 * l2)
    l9 = min(_log2(float(norm1(a8 @ a))), l8 + l1)
    lt = math.log2(tol)
    refined = max(
        math.ceil((LOG2_B16_EXP + 2 * l8 - lt) / 16),
        math.ceil((_log2_inv_fact(17) + l8 + l9 - lt) / 17),
        0,
    )
    s = min(s, refined)
    return m, s, 4 + s + alg.REFINE_PRODUCTS


def test_nonnormal_avoids_overscaling():
    """||A^k|| << ||A||^k keeps s small where a norm-only rule would scale a lot."""
    mats = [
        np.array([[-1.0, 1e4], [0.0, -1.0]]),  # ||A||_1 ~ 1e4, ||A^2||_1 ~ 2e4
        np.array([[-1.0, 1e4], [0.0, -2.0]]),
        np.array([[0.5, 30.0], [0.0, 0.5]]),
    ]
    t15 = theta(TAYLOR["opt15", "exp"], 4, math.log2(1e-8))
    worst = [math.ceil(math.log2(float(norm1(a)) / t15)) for a in mats]
    assert worst == [13, 13, 4]
    plain = [authors_rule(a, 1e-8) for a in mats]
    assert [p[1] for p in plain] == [7, 7, 2]
    want = [refined_rule(a, 1e-8) for a in mats]
    assert want[0][1] < plain[0][1]
    assert_infos(infos("exp", mats, 1e-8, "opt15"), want, ["2x2"] * len(mats))


# ---------------------------------------------------------------------------------
# The baseline (Xiao and Liu, ICML 2020; code changyi7231/MEF).


def baseline_reference(a: np.ndarray, tol: float, shift: int = 0) -> tuple[int, int]:
    """(terms, s) of Xiao & Liu's expm: s from ||A||, terms until ||t_k|| <= tol."""
    a1 = float(norm1(a))
    s = math.ceil(math.log2(max(a1, 0.5))) + 1
    x = a / 2.0**s
    t = x / (1 + shift)
    k, terms = 1, 0
    while norm1(t) > tol:
        terms += 1
        t = x @ t / (k + 1 + shift)
        k += 1
    return terms, s


@pytest.mark.parametrize("family, tol", [("exp", None), ("exp", 1e-8), ("phi1", 1e-8)])
def test_baseline_terms_and_scaling(family, tol):
    rng = np.random.default_rng(7)
    shift = {"exp": 0, "phi1": 1}[family]
    tol_value = 2.0**-53 if tol is None else tol
    norms = (1e-6, 0.3, 0.5, 0.51, 1.0, 3.0, 200.0, 1e5)
    mats = [random_with_norm(rng, (4, 4), norm) for norm in norms]
    mats.append(np.zeros((4, 4)))
    mats.append(np.diag([0.5, 0.1, -0.2, 0.0]))  # ||A|| = 0.5 exactly: no scaling
    want, labels = [], []
    for a in mats:
        terms, s = baseline_reference(a, tol_value, shift)
        if float(norm1(a)) <= 0.5:
            assert s == 0
        want.append((terms, s, terms + SQUARING[family] * s))
        labels.append(f"||A|| = {float(norm1(a)):.3g}")
    assert_infos(infos(family, mats, tol, "baseline"), want, labels)


# ---------------------------------------------------------------------------------
# Batches share one order; each member keeps its own squarings.


def projector_case(x: float) -> np.ndarray:
    """x P with P = ones/3 (P^2 = P): ||A^k||_1 = x^k, not triangular, exp = I + (e^x - 1) P."""
    return x * np.full((3, 3), 1 / 3)


def test_batch_shares_order_keeps_squarings():
    norms = [1e-5, 0.01, 0.3, 5.0, 100.0]
    t15 = theta(TAYLOR["opt15", "exp"], 4, math.log2(1e-8))
    a = np.stack([projector_case(x) for x in norms])
    want_s = [max(0, math.ceil(math.log2(x / t15))) for x in norms]
    assert want_s == [0, 0, 0, 2, 6]
    out, (order, s, products) = run("exp", a, 1e-8, "opt15")
    np.testing.assert_array_equal(order, [15] * 5)
    np.testing.assert_array_equal(s, want_s)
    np.testing.assert_array_equal(products, [4 + k for k in want_s])
    # Every member meets the tolerance with its own s: truncation tol = 1e-8 relative
    # (backward), so a forward relative error of at most about ||A|| * tol.
    exact = np.stack([np.eye(3) + np.expm1(x) * np.full((3, 3), 1 / 3) for x in norms])
    rel = np.abs(out - exact).max(axis=(-2, -1)) / np.abs(exact).max(axis=(-2, -1))
    assert np.all(rel < 1e-8 * np.maximum(1.0, norms)), rel
    # The same under vmap.
    with jax.enable_x64(True):
        info_v = jax.jit(jax.vmap(lambda x: jexpm.expm(x, tol=1e-8, return_info=True)[1]))(a)
    np.testing.assert_array_equal(np.asarray(info_v.order), order)
    np.testing.assert_array_equal(np.asarray(info_v.squarings), s)
    np.testing.assert_array_equal(np.asarray(info_v.products), products)
    # Two batch dimensions.
    info_2 = infos("exp", np.stack([a[:4], a[[1, 0, 4, 2]]]), 1e-8, "opt15", per_matrix=False)
    np.testing.assert_array_equal(info_2[0], [[15] * 4] * 2)
    np.testing.assert_array_equal(info_2[1], [[0, 0, 0, 2], [0, 0, 6, 0]])
    np.testing.assert_array_equal(info_2[2], [[4, 4, 4, 6], [4, 4, 10, 4]])
    # All members small: the shared order is the largest one needed, no squarings.
    info_small = infos("exp", a[[0, 1, 2, 2, 2]], 1e-8, "opt15", per_matrix=False)
    np.testing.assert_array_equal(info_small[0], [8] * 5)
    np.testing.assert_array_equal(info_small[1], [0] * 5)
    np.testing.assert_array_equal(info_small[2], [3] * 5)
    info_tiny = infos("exp", a[[0, 0, 0, 0, 0]], 1e-8, "opt15", per_matrix=False)
    np.testing.assert_array_equal(np.stack(info_tiny), [[1] * 5, [0] * 5, [0] * 5])
    # PS: order 16 shared, squarings from its own threshold.
    info_ps = infos("exp", a, 1e-8, "ps", per_matrix=False)
    t16 = theta(TAYLOR["ps", "exp"], 6, math.log2(1e-8))
    want_ps = [max(0, math.ceil(math.log2(x / t16))) for x in norms]
    np.testing.assert_array_equal(info_ps[0], [16] * 5)
    np.testing.assert_array_equal(info_ps[1], want_ps)
    np.testing.assert_array_equal(info_ps[2], [6 + k for k in want_ps])


# ---------------------------------------------------------------------------------
# Products on random and non-normal matrices: library vs the authors' rule vs PS.


RANDOM_SIZES = (4, 8, 16, 32)
RANDOM_KINDS = (("gaussian", 50), ("nonnormal", 10), ("upper", 10), ("spike", 10))


def random_kinds() -> list[str]:
    """The kind of each matrix of random_set, in order."""
    return [kind for _ in RANDOM_SIZES for kind, count in RANDOM_KINDS for _ in range(count)]


def random_set(rng) -> list[np.ndarray]:
    """Gaussian and strongly non-normal matrices, n in 4..32, ||A||_1 log-uniform in 1e-4..1e3.

    nonnormal: triangular plus 10x larger strictly upper part (tests.helpers); upper:
    small diagonal, strictly upper part 1e3 times larger; spike: small dense part plus
    one huge corner entry (||A^2|| << ||A||^2, the case the refinement is for).
    """
    mats = []
    for n in RANDOM_SIZES:
        for kind, count in RANDOM_KINDS:
            for norm in 10.0 ** rng.uniform(-4, 3, size=count):
                if kind == "upper":
                    a = np.diag(rng.standard_normal(n))
                    a = a + 1e3 * np.triu(rng.standard_normal((n, n)), 1)
                elif kind == "spike":
                    a = 1e-3 * rng.standard_normal((n, n))
                    a[0, n - 1] = 1e2
                else:
                    a = random_with_norm(rng, (n, n), 1.0, kind=kind)
                mats.append(a * (norm / norm1(a)))
    return mats


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    """blockdiag(A, 0): the same ||A^k||_1 for every k, so the same (m, s, products)."""
    out = np.zeros((n, n), a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def per_matrix(mats, method, tol):
    """(order, s, products) of each matrix, evaluated alone (the order is not shared).

    All are zero-padded to the largest size so that one compilation serves them all.
    """
    n = max(a.shape[-1] for a in mats)
    info = infos("exp", [_pad(a, n) for a in mats], tol, method)
    return [tuple(int(v[i]) for v in info) for i in range(len(mats))]


@functools.lru_cache(maxsize=1)
def _random_comparison(tol: float = 1e-8):
    """Per-matrix (order, s, products) of the rules and the library on random_set."""
    mats = random_set(np.random.default_rng(2025))
    return {
        "mats": mats,
        "rule": [authors_rule(a, tol) for a in mats],
        "refined": [refined_rule(a, tol) for a in mats],
        "opt15": per_matrix(mats, "opt15", tol),
        "ps": per_matrix(mats, "ps", tol),
        "ps_rule": [authors_ps_rule(a, tol) for a in mats],
        "baseline": per_matrix(mats, "baseline", tol),
    }


def test_random_selection_matches_rule_matrix_by_matrix():
    r = _random_comparison()
    mats = r["mats"]
    assert len(mats) == 320
    gap = [2 * np.log2(norm1(a)) - np.log2(norm1(a @ a)) for a in mats]
    # Only the spikes are non-normal enough for the library's refinement.
    spike = [k == "spike" for k in random_kinds()]
    assert all((g > alg.REFINE_GAP_BITS) == sp for g, sp in zip(gap, spike, strict=True))
    # The library does what the authors' rule, plus its own refinement, says.
    pairs = zip(r["opt15"], r["refined"], strict=True)
    bad = [(i, o, w) for i, (o, w) in enumerate(pairs) if o != w]
    assert not bad, bad[:10]
    # Without strong non-normality (no refinement) that is exactly the authors' rule.
    plain = [i for i, g in enumerate(gap) if g <= alg.REFINE_GAP_BITS]
    assert len(plain) >= 240
    assert all(r["opt15"][i] == r["rule"][i] for i in plain)
    # PS needs fewer products than opt15 only where its top order's bound with ||A^4||
    # (which opt15 never forms) saved squarings: one upper triangular matrix here,
    # (m, s, products) = (16, 5, 11) against opt15's (15, 8, 12).
    cheaper = [i for i, (o, p) in enumerate(zip(r["opt15"], r["ps"], strict=True)) if p[2] < o[2]]
    assert len(cheaper) <= 2, cheaper
    assert all(r["ps"][i][0] == 16 and r["ps"][i][1] < r["opt15"][i][1] for i in cheaper)
    # PS never needs more than the authors' PS rule where it does not refine, and it
    # reaches an order no higher.
    for i in plain:
        (m, s, products), (m_rule, s_rule, products_rule) = r["ps"][i], r["ps_rule"][i]
        assert products <= products_rule and m <= m_rule and s <= s_rule, (i, r["ps"][i])


def test_products_no_more_than_authors_rule(capsys):
    r = _random_comparison()
    mats = r["mats"]
    totals = {k: sum(v[2] for v in r[k]) for k in ("opt15", "rule", "ps", "ps_rule", "baseline")}
    refined = [i for i, (a, b) in enumerate(zip(r["refined"], r["rule"], strict=True)) if a != b]
    costlier = [
        (i, r["rule"][i], r["opt15"][i])
        for i in range(len(mats))
        if r["opt15"][i][2] > r["rule"][i][2]
    ]
    # The same matrices as one batch per size share the order: never fewer products.
    shared = 0
    for n in RANDOM_SIZES:
        batch = np.stack([_pad(a, 32) for a in mats if a.shape[-1] == n])
        shared += int(np.sum(infos("exp", batch, 1e-8, "opt15", per_matrix=False)[2]))
    report = (
        f"products over {len(mats)} matrices at tol=1e-8: opt15 {totals['opt15']}, "
        f"authors' rule {totals['rule']}, ps {totals['ps']} (authors' PS rule "
        f"{totals['ps_rule']}), baseline {totals['baseline']}; "
        f"opt15 as 4 shared-order batches {shared}; refined {len(refined)}, "
        f"costlier than the rule {len(costlier)}: (index, rule, opt15) {costlier[:6]}"
    )
    with capsys.disabled():
        print("\n[selection] " + report)
    assert shared >= totals["opt15"], report
    # opt15 needs fewer products than PS (Sastre et al. 2025: 2597 vs 3110 on their test
    # set), and far fewer than the baseline.
    assert totals["opt15"] < totals["ps"] < totals["baseline"], report
    assert totals["opt15"] <= totals["rule"], report
    # PS selects with the authors' bounds too (and with its own where they are sharper).
    assert totals["ps"] <= totals["ps_rule"], report


# ---------------------------------------------------------------------------------
# What gets traced: on-device branching, no host round trips.


def _primitives(jaxpr, acc=None):
    """(name, eqn) of every equation, recursing into sub-jaxprs (jit, cond, loops, rules)."""
    acc = [] if acc is None else acc
    for eqn in jaxpr.eqns:
        acc.append((eqn.primitive.name, eqn))
        for v in eqn.params.values():
            for x in v if isinstance(v, (list, tuple)) else [v]:
                if isinstance(x, jex_core.ClosedJaxpr):
                    _primitives(x.jaxpr, acc)
                elif isinstance(x, jex_core.Jaxpr):
                    _primitives(x, acc)
    return acc


# The switch is over every order's formula, order 1's included.
@pytest.mark.parametrize("method, n_formulas", [("opt15", 5), ("ps", 7), ("baseline", None)])
@pytest.mark.parametrize("batched", ["single", "batch", "vmap"])
def test_jaxpr_has_switch_and_loop_and_no_callbacks(method, n_formulas, batched):
    a = jnp.ones((3, 5, 5), jnp.float32)

    def f(x):
        return jexpm.expm(x, method=method)

    if batched == "single":
        jaxpr = jax.make_jaxpr(f)(a[0])
    elif batched == "batch":
        jaxpr = jax.make_jaxpr(f)(a)
    else:
        jaxpr = jax.make_jaxpr(jax.vmap(f))(a)
    prims = _primitives(jaxpr.jaxpr)
    names = {name for name, _ in prims}
    assert "while" in names
    assert not [n for n in names if "callback" in n or n == "outside_call"], sorted(names)
    if n_formulas is not None:
        # lax.switch over the formulas survives, with a scalar index even under vmap.
        switches = [
            e for name, e in prims if name == "cond" and len(e.params["branches"]) == n_formulas
        ]
        assert switches, sorted(names)
        assert all(e.invars[0].aval.shape == () for e in switches)
