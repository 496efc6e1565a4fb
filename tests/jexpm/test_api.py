"""Public API of jexpm: input validation, identities, transform equivalence, tracing."""

from __future__ import annotations

import re

import jax
import jax.extend as jex
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest
import scipy.linalg as sl

import jexpm
from tests.helpers import EPS, norm1, random_with_norm, rel_err

METHODS = ("opt15", "ps", "baseline")
FUNCS = {"expm": jexpm.expm, "phi1": jexpm.phi1}


def _ctx(dtype):
    """x64 switched on only for 64-bit (float64 / complex128) tests."""
    return jax.enable_x64(np.dtype(dtype) in (np.dtype("float64"), np.dtype("complex128")))


def _phi1_scalar(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, np.expm1(safe) / safe)


def _identity_tol(dtype, norm: float) -> float:
    """Rounding allowance for identities: a multiple of eps growing with ||A||."""
    return 64 * EPS[np.dtype(dtype)] * max(1.0, norm)


# ---------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (4, 2, 3), (3, 1)])
def test_rejects_non_square(name, shape):
    a = jnp.zeros(shape, jnp.float32)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        FUNCS[name](a)


@pytest.mark.parametrize("name", FUNCS)
def test_rejects_unknown_method(name):
    with pytest.raises(ValueError, match="method"):
        FUNCS[name](jnp.eye(3), method="pade13")


def test_rejects_unknown_method_lowrank_and_frechet():
    with pytest.raises(ValueError, match="method"):
        jexpm.expm_lowrank(jnp.ones((4, 2)), jnp.ones((2, 4)), method="pade13")
    with pytest.raises(ValueError, match="method"):
        jexpm.expm_frechet(jnp.eye(3), jnp.eye(3), method="pade13")


@pytest.mark.parametrize("tol", [0.0, -1e-3, 1.0, 2.0, float("nan")])
def test_rejects_tol_out_of_range(tol):
    a = jnp.eye(3)
    for f in FUNCS.values():
        with pytest.raises(ValueError, match="tol"):
            f(a, tol=tol)
    with pytest.raises(ValueError, match="tol"):
        jexpm.expm_frechet(a, a, tol=tol)
    with pytest.raises(ValueError, match="tol"):
        jexpm.expm_lowrank(jnp.ones((3, 1)), jnp.ones((1, 3)), tol=tol)


def test_accepts_numpy_scalar_tol():
    a = jnp.eye(3) * 0.1
    np.testing.assert_array_equal(jexpm.expm(a, tol=np.float64(1e-3)), jexpm.expm(a, tol=1e-3))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("kind", ["traced", "array"])
def test_rejects_traced_tol(name, kind):
    """tol is static: a traced (or array) tol is a TypeError, as the docstring says."""
    f = FUNCS[name]
    a = jnp.eye(3) * 0.1
    with pytest.raises(TypeError, match="tol"):
        if kind == "traced":
            jax.jit(lambda a, t: f(a, tol=t))(a, 1e-3)
        else:
            f(a, tol=jnp.float32(1e-3))


@pytest.mark.parametrize(
    ("u_shape", "v_shape"),
    [((4, 2), (3, 4)), ((4, 2), (2, 5)), ((4,), (4,)), ((2, 4, 2), (2, 3, 4)), ((4, 2), (4, 2))],
)
def test_lowrank_rejects_shape_mismatch(u_shape, v_shape):
    u, v = jnp.ones(u_shape), jnp.ones(v_shape)
    with pytest.raises(ValueError, match=re.escape(str(u_shape))):
        jexpm.expm_lowrank(u, v)


@pytest.mark.parametrize(
    ("a_shape", "e_shape"),
    [((3, 3), (3, 4)), ((3, 3), (4, 4)), ((2, 3, 3), (3, 3, 3)), ((3, 3), (3,))],
)
def test_frechet_rejects_shape_mismatch(a_shape, e_shape):
    with pytest.raises(ValueError, match=re.escape(str(e_shape))):
        jexpm.expm_frechet(jnp.zeros(a_shape), jnp.zeros(e_shape))


@pytest.mark.parametrize(
    ("a_shape", "e_shape"),
    [((1, 3, 4, 4), (2, 1, 4, 4)), ((4, 4), (2, 4, 4)), ((3, 4, 4), (4, 4))],
)
def test_frechet_broadcasts_batch_shapes_like_scipy(a_shape, e_shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape) / 2
    e = rng.standard_normal(e_shape)
    want_x, want_l = sl.expm_frechet(a, e)  # scipy >= 1.17 broadcasts the batch shapes
    with jax.enable_x64(True):
        x, lx = jexpm.expm_frechet(a, e)
    assert x.shape == lx.shape == want_l.shape
    np.testing.assert_allclose(x, want_x, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(lx, want_l, rtol=1e-12, atol=1e-13)


def test_frechet_rejects_non_square():
    with pytest.raises(ValueError, match=re.escape(str((3, 4)))):
        jexpm.expm_frechet(jnp.zeros((3, 4)), jnp.zeros((3, 4)))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("kind", ["int32", "int64", "uint8", "bool"])
def test_integer_and_bool_promoted_like_jax_numpy(name, x64, kind):
    """64-bit integers to float64 (float32 without x64), the rest to float32."""
    with jax.enable_x64(x64):
        a = np.array([[1, 2, 0], [0, 1, 3], [1, 0, 0]]).astype(kind)
        want = jnp.float64 if x64 and kind == "int64" else jnp.float32
        assert jax.eval_shape(FUNCS[name], a).dtype == want
        # The same dtype as jax.numpy and jax.scipy.linalg.expm.
        assert jax.eval_shape(jsl.expm, a).dtype == want
        assert jax.eval_shape(jnp.sin, a).dtype == want


def test_integer_values_equal_float_values():
    a = np.array(np.arange(36).reshape(6, 6) % 5 - 2, np.int32)
    out = jexpm.expm(a, method="opt15")
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, jexpm.expm(a.astype(np.float32), method="opt15"))


def test_integer_lowrank_and_frechet_promoted():
    u, v = np.array([[1], [2], [0]]), np.array([[0, 1, -1]])
    assert jax.eval_shape(jexpm.expm_lowrank, u, v).dtype == jnp.float32
    a, e = np.eye(3, dtype=np.int32), np.ones((3, 3), np.int32)
    x, lx = jax.eval_shape(jexpm.expm_frechet, a, e)
    assert x.dtype == lx.dtype == jnp.float32


# ---------------------------------------------------------------------------------
# Edge shapes and values
#
# Compilation dominates this file's runtime, so most tests share a few shapes: single
# (6, 6) and batched (4, 6, 6) matrices, in float32 and float64.

N = 6
BATCH_NORMS = (0.003, 0.4, 3.0, 40.0)


def _single(dtype, norm, seed=0):
    return random_with_norm(np.random.default_rng(seed), (N, N), norm, dtype)


def _batch(dtype=np.float32, seed=9):
    rng = np.random.default_rng(seed)
    return np.stack([random_with_norm(rng, (N, N), x, dtype) for x in BATCH_NORMS])


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(0, 0), (3, 0, 0), (0, 2, 2)])
def test_empty(name, method, shape):
    a = jnp.zeros(shape, jnp.float32)
    out, info = FUNCS[name](a, method=method, return_info=True)
    assert out.shape == shape
    assert out.dtype == jnp.float32
    for field in info:
        assert field.shape == shape[:-2]
        assert field.dtype == jnp.int32


def test_empty_frechet_and_lowrank():
    x, lx = jexpm.expm_frechet(jnp.zeros((3, 0, 0)), jnp.zeros((3, 0, 0)))
    assert x.shape == lx.shape == (3, 0, 0)
    # Rank 0: exp(U V) = exp(0) = I.
    lr = jexpm.expm_lowrank(jnp.zeros((4, 0)), jnp.zeros((0, 4)))
    np.testing.assert_array_equal(lr, jnp.eye(4))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
def test_one_by_one(name, method):
    x = np.array([-30.0, -1.0, 0.0, 1e-9, 0.3, 2.0, 50.0, 700.0])
    with jax.enable_x64(True):
        out = np.asarray(FUNCS[name](x[:, None, None], method=method))[:, 0, 0]
    want = np.exp(x) if name == "expm" else _phi1_scalar(x)
    # exp is |x|-conditioned: allow a few eps times max(1, |x|).
    err = np.abs(out - want) / np.abs(want)
    bound = 8 * EPS[np.dtype("float64")] * np.maximum(1.0, np.abs(x))
    assert np.all(err <= bound), (err / EPS[np.dtype("float64")]).tolist()


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_member_is_nan_others_unaffected(name, method):
    f = FUNCS[name]
    a = _batch()
    for bad in (np.nan, np.inf, -np.inf):
        a[1, 2, 3] = bad
        a[3, 0, 0] = -bad
        out = np.asarray(f(a, method=method))
        assert np.all(np.isnan(out[[1, 3]])), bad
        for i in (0, 2):
            assert np.all(np.isfinite(out[i]))
            alone = np.asarray(f(a[i], method=method))
            assert rel_err(out[i], alone) <= 16 * EPS[np.dtype("float32")], (bad, i)
        # Alone a non-finite matrix is all NaN as well.
        assert np.all(np.isnan(np.asarray(f(a[1], method=method)))), bad


@pytest.mark.parametrize("method", ["opt15", "ps"])
@pytest.mark.parametrize("norm", [1e-9, 1.0])
def test_nonfinite_member_does_not_raise_the_batch_order(method, norm):
    """Found by the property search: a NaN member used to lift the order the batch shares
    (to the top order, or from order 1 to 2), changing the other members' bits."""
    rng = np.random.default_rng(7)
    a = (rng.standard_normal((3, 2, 2)) * norm).astype(np.float32)
    clean, bad = a.copy(), a.copy()
    clean[0] = 0
    bad[0, 0, 1] = np.nan
    x_clean, info_clean = jexpm.expm(clean, method=method, return_info=True)
    x_bad, info_bad = jexpm.expm(bad, method=method, return_info=True)
    assert np.all(np.isnan(np.asarray(x_bad[0])))
    np.testing.assert_array_equal(np.asarray(x_bad[1:]), np.asarray(x_clean[1:]))
    np.testing.assert_array_equal(np.asarray(info_bad.order[1:]), np.asarray(info_clean.order[1:]))


def test_nonfinite_member_does_not_decide_the_triangular_band():
    """Found by the property search: a dense NaN member beside upper triangular ones made
    the batch skip the exact band, changing the others' bits."""
    tri = np.array([[5.304961, -5.573928], [0.0, 4.426072]], np.float32)
    bad = np.stack([tri, np.full((2, 2), np.nan, np.float32)])
    alone = np.asarray(jexpm.expm(tri[None]))
    np.testing.assert_array_equal(np.asarray(jexpm.expm(bad))[:1], alone)


# ---------------------------------------------------------------------------------
# Identities

IDENTITY_DTYPES = ["float32", "float64"]
NORMS = [0.01, 1.0, 10.0]


# Complex phi1 is covered by test_phi1_identity_complex.
ZERO_CASES = [("expm", t) for t in ("float32", "float64", "complex64")] + [
    ("phi1", t) for t in ("float32", "float64")
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "dtype"), ZERO_CASES)
def test_zero_gives_identity_exactly(name, method, dtype):
    with _ctx(dtype):
        out = FUNCS[name](jnp.zeros((N, N), dtype), method=method)
        assert out.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(out, np.eye(N))
    if dtype == "float32":  # batched, next to members that need higher orders and squarings
        a = _batch(dtype)
        a[1] = 0
        np.testing.assert_array_equal(FUNCS[name](a, method=method)[1], np.eye(N))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", IDENTITY_DTYPES)
@pytest.mark.parametrize("norm", NORMS)
def test_exp_times_exp_minus_is_identity(method, dtype, norm):
    a = _single(dtype, norm, seed=2)
    with _ctx(dtype):
        x = np.asarray(jexpm.expm(a, method=method), np.float64)
        y = np.asarray(jexpm.expm(-a, method=method), np.float64)
    err = norm1(x @ y - np.eye(N)) / (norm1(x) * norm1(y))
    assert err <= _identity_tol(dtype, norm), err / EPS[np.dtype(dtype)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", IDENTITY_DTYPES)
@pytest.mark.parametrize("norm", NORMS)
def test_det_is_exp_trace(method, dtype, norm):
    a = _single(dtype, norm, seed=3)
    with _ctx(dtype):
        x = np.asarray(jexpm.expm(a, method=method), np.float64)
    want = np.exp(np.trace(a.astype(np.float64)))
    err = abs(np.linalg.det(x) / want - 1)
    # det multiplies n relative perturbations of the eigenvalues.
    assert err <= N * _identity_tol(dtype, norm), err / EPS[np.dtype(dtype)]


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", IDENTITY_DTYPES)
def test_diagonal_is_elementwise(name, method, dtype):
    d = np.array([-5.0, -0.5, 0.0, 1e-3, 3.0, 8.0]).astype(dtype)
    with _ctx(dtype):
        out = np.asarray(FUNCS[name](np.diag(d), method=method), np.float64)
    assert np.all(out[~np.eye(N, dtype=bool)] == 0)
    want = np.exp(d.astype(np.float64)) if name == "expm" else _phi1_scalar(d)
    err = np.abs(np.diag(out) / want - 1)
    assert np.all(err <= _identity_tol(dtype, 8.0)), (err / EPS[np.dtype(dtype)]).tolist()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", IDENTITY_DTYPES)
@pytest.mark.parametrize("norm", NORMS)
def test_skew_symmetric_gives_orthogonal(method, dtype, norm):
    a = np.random.default_rng(4).standard_normal((N, N))
    s = a - a.T
    s = (s * norm / norm1(s)).astype(dtype)
    with _ctx(dtype):
        q = np.asarray(jexpm.expm(s, method=method), np.float64)
    err = norm1(q.T @ q - np.eye(N))
    assert err <= _identity_tol(dtype, norm), err / EPS[np.dtype(dtype)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("norm", [0.05, 1.0, 10.0])
def test_complex_against_scipy(method, dtype, norm):
    a = _single(dtype, norm, seed=5)
    with _ctx(dtype):
        x = jexpm.expm(a, method=method)
        assert x.dtype == jnp.dtype(dtype)
    ref = sl.expm(a.astype(np.complex128))
    assert rel_err(x, ref) <= _identity_tol(dtype, norm), rel_err(x, ref)


@pytest.mark.parametrize("method", METHODS)
def test_exp_of_anti_hermitian_is_unitary(method):
    h = _single(np.complex128, 3.0, seed=6)
    a = h - h.conj().T
    with jax.enable_x64(True):
        q = np.asarray(jexpm.expm(a, method=method))
    err = norm1(q.conj().T @ q - np.eye(N))
    assert err <= _identity_tol("complex128", norm1(a)), err


def _check_phi1_identity(a, method, dtype, norm):
    """I + A phi1(A) = exp(A)."""
    with _ctx(dtype):
        p = np.asarray(jexpm.phi1(a, method=method))
        x = np.asarray(jexpm.expm(a, method=method))
    wide = np.complex128 if np.iscomplexobj(a) else np.float64
    lhs = np.eye(N) + a.astype(wide) @ p.astype(wide)
    # Rounding in A phi1(A) is relative to ||A|| ||phi1(A)||, not to ||exp(A)||.
    scale = 1 + norm * norm1(p) / norm1(x)
    assert rel_err(lhs, x) <= _identity_tol(dtype, norm) * scale, rel_err(lhs, x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", IDENTITY_DTYPES)
@pytest.mark.parametrize("norm", [1e-3, 0.1, 1.0, 10.0, 40.0])
def test_phi1_identity(method, dtype, norm):
    _check_phi1_identity(_single(dtype, norm, seed=7), method, dtype, norm)


@pytest.mark.parametrize("norm", [0.1, 10.0])
def test_phi1_identity_complex(norm):
    _check_phi1_identity(_single("complex128", norm, seed=7), "opt15", "complex128", norm)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", [0.01, 1.0, 10.0])
def test_lowrank_matches_expm(method, norm):
    rng = np.random.default_rng(8)
    u, v = rng.standard_normal((N, 2)), rng.standard_normal((2, N))
    scale = np.sqrt(norm / norm1(u @ v))
    u, v = u * scale, v * scale
    with jax.enable_x64(True):
        lr = np.asarray(jexpm.expm_lowrank(u, v, method=method))
        full = np.asarray(jexpm.expm(u @ v, method=method))
    assert lr.shape == (N, N)
    assert rel_err(lr, full) <= _identity_tol("float64", norm), rel_err(lr, full)
    det = np.linalg.det(lr)
    assert abs(det / np.exp(np.trace(v @ u)) - 1) <= N * _identity_tol("float64", norm)


# ---------------------------------------------------------------------------------
# Transform equivalence: eager, jit, vmap


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
def test_eager_equals_jit(name, method):
    f = FUNCS[name]
    a = _batch()
    jitted = f(a, method=method)  # the public functions are jitted
    with jax.disable_jit():
        eager = f(a, method=method)
    assert rel_err(eager, jitted) <= 8 * EPS[np.dtype("float32")], rel_err(eager, jitted)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
def test_vmap_equals_batched_and_slices(name, method):
    f = FUNCS[name]
    a = _batch()
    batched = f(a, method=method)
    mapped = jax.vmap(lambda x: f(x, method=method))(a)
    np.testing.assert_array_equal(mapped, batched)
    for i in range(a.shape[0]):
        # Alone, a member may take a lower order than the batch: same accuracy.
        alone = f(a[i], method=method)
        err = rel_err(batched[i], alone)
        assert err <= 4 * EPS[np.dtype("float32")], (i, err)


@pytest.mark.parametrize("method", METHODS)
def test_vmap_of_vmap(method):
    a = _batch()
    nested = jax.vmap(jax.vmap(lambda x: jexpm.expm(x, method=method)))(a.reshape(2, 2, N, N))
    want = jexpm.expm(a, method=method)
    np.testing.assert_array_equal(nested, np.asarray(want).reshape(2, 2, N, N))


@pytest.mark.parametrize("method", METHODS)
def test_vmap_other_axes(method):
    a = _batch()  # (B, n, n)
    want = np.asarray(jexpm.expm(a, method=method))
    last = np.moveaxis(a, 0, 2)  # (n, n, B)
    got = jax.vmap(lambda x: jexpm.expm(x, method=method), in_axes=2, out_axes=1)(last)
    np.testing.assert_array_equal(got, np.moveaxis(want, 0, 1))


def test_vmap_lowrank():
    rng = np.random.default_rng(10)
    u = rng.standard_normal((4, N, 2)).astype(np.float32)
    v = rng.standard_normal((4, 2, N)).astype(np.float32)
    mapped = jax.vmap(jexpm.expm_lowrank)(u, v)
    np.testing.assert_array_equal(mapped, jexpm.expm_lowrank(u, v))


# ---------------------------------------------------------------------------------
# Tracing: no retrace, on-device control flow, info


@pytest.mark.parametrize(
    ("name", "method"), [("expm", "opt15"), ("expm", "ps"), ("expm", "baseline"), ("phi1", "opt15")]
)
def test_no_retrace_across_values_and_orders(name, method):
    f = FUNCS[name]
    traces = []

    @jax.jit
    def run(a):
        traces.append(a.shape)  # runs only while tracing
        return f(a, method=method, return_info=True)

    base = _single(np.float64, 1.0, seed=11)
    base = (base - base.T).astype(np.float32)  # skew: exp stays bounded at any norm
    infos = []
    for norm in (1e-6, 0.05, 0.7, 3.0, 100.0, 1e4):
        out, info = run(base * np.float32(norm))
        assert np.all(np.isfinite(np.asarray(out)))
        infos.append((int(info.order), int(info.squarings), int(info.products)))
    assert len(traces) == 1
    # The same compiled function took different orders and squarings.
    assert len({i[0] for i in infos}) >= 3, infos
    assert len({i[1] for i in infos}) >= 3, infos


def _primitives(jaxpr, out=None) -> set[str]:
    out = set() if out is None else out
    if isinstance(jaxpr, jex.core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    for eqn in jaxpr.eqns:
        out.add(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, (jex.core.ClosedJaxpr, jex.core.Jaxpr)):
                    _primitives(sub, out)
    return out


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("method", METHODS)
def test_jaxpr_has_device_control_flow_and_no_callbacks(name, method):
    f = FUNCS[name]
    a = jnp.zeros((3, 4, 4))
    for jaxpr in (
        jax.make_jaxpr(lambda x: f(x, method=method))(a),
        # Under vmap the branch stays a cond (custom_vmap) instead of becoming a select.
        jax.make_jaxpr(jax.vmap(lambda x: f(x, method=method)))(a),
    ):
        prims = _primitives(jaxpr)
        # The baseline has no order to choose: a while loop over Taylor terms only.
        if method != "baseline":
            assert "cond" in prims or "switch" in prims, sorted(prims)
        assert "while" in prims, sorted(prims)
        assert not [p for p in prims if "callback" in p], sorted(prims)


@pytest.mark.parametrize("name", FUNCS)
def test_return_info(name):
    a = _batch()
    out, info = FUNCS[name](a, method="opt15", return_info=True)
    assert isinstance(info, jexpm.ExpmInfo)
    assert isinstance(info, tuple) and info._fields == ("order", "squarings", "products")
    for field in info:
        assert isinstance(field, jax.Array)
        assert field.dtype == jnp.int32
        assert field.shape == (4,)
    np.testing.assert_array_equal(out, FUNCS[name](a, method="opt15"))
    # One order for the batch, squarings per member: none for the smallest norm.
    assert len(np.unique(np.asarray(info.order))) == 1
    s = np.asarray(info.squarings)
    assert s[-1] > s[1] >= s[0] == 0, s
    single = FUNCS[name](a[0], method="opt15", return_info=True)[1]
    assert all(field.shape == () and field.dtype == jnp.int32 for field in single)
    # Under vmap the info is the batched call's.
    vinfo = jax.vmap(lambda x: FUNCS[name](x, method="opt15", return_info=True)[1])(a)
    for got, want in zip(vinfo, info, strict=True):
        np.testing.assert_array_equal(got, want)
    # Batch shape (2, 2): info has that shape too (eval_shape: no compile).
    shapes = jax.eval_shape(lambda x: FUNCS[name](x, return_info=True)[1], a.reshape(2, 2, N, N))
    assert all(field.shape == (2, 2) and field.dtype == jnp.int32 for field in shapes)


# ---------------------------------------------------------------------------------
# jax.scipy.linalg.expm's keywords


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_upper_triangular_keyword_keeps_the_value(dtype):
    """On upper triangular input the flag only skips the check: the same value."""
    rng = np.random.default_rng(20)
    a = np.triu(random_with_norm(rng, (3, N, N), 20.0, dtype))
    a[1] *= 1e-3
    with jax.enable_x64(True):
        flagged, info = jexpm.expm(a, upper_triangular=True, return_info=True)
        checked = jexpm.expm(a)
    np.testing.assert_array_equal(flagged, checked)
    assert np.asarray(info.squarings).max() > 0  # the triangular squaring ran
    assert rel_err(flagged, sl.expm(a)) <= 1e3 * EPS[np.dtype(dtype)]


def test_upper_triangular_keyword_is_what_was_promised():
    """Like jax.scipy: the flag is trusted; on triangular input the exact diagonal is used."""
    a = np.array([[1.0, 1e4, 0.0], [0.0, 1.5, 1e4], [0.0, 0.0, 2.0]])
    with jax.enable_x64(True):
        x = np.asarray(jexpm.expm(a, upper_triangular=True))
    np.testing.assert_allclose(np.diag(x), np.exp(np.diag(a)), rtol=1e-15)
    with pytest.raises(TypeError, match="upper_triangular must be None, True or False"):
        jexpm.expm(a, upper_triangular=jnp.bool_(True))


def test_upper_triangular_false_treats_the_input_as_general():
    """False: no check and no exact band. The same value and gradient on dense input,
    the general algorithm's value on triangular input, and a gradient program without
    the band's loops."""
    rng = np.random.default_rng(22)
    dense = random_with_norm(rng, (3, N, N), 20.0, "float64")
    hard = np.array([[1.0, 1e4, 0.0], [0.0, 1.5, 1e4], [0.0, 0.0, 2.0]])

    def grad(flag):
        return jax.grad(lambda a: jnp.sum(jnp.sin(jexpm.expm(a, upper_triangular=flag))))

    with jax.enable_x64(True):
        np.testing.assert_array_equal(jexpm.expm(dense, upper_triangular=False), jexpm.expm(dense))
        np.testing.assert_array_equal(grad(False)(dense), grad(None)(dense))
        general = np.asarray(jexpm.expm(hard, upper_triangular=False))
        banded = np.asarray(jexpm.expm(hard))
        loops = {
            flag: jax.jit(grad(flag)).lower(dense).as_text().count("stablehlo.while")
            for flag in (None, False)
        }
    # 14 squarings: only the recomputed band keeps the diagonal exact
    np.testing.assert_allclose(np.diag(banded), np.exp(np.diag(hard)), rtol=1e-15)
    assert not np.allclose(np.diag(general), np.exp(np.diag(hard)), rtol=1e-14, atol=0)
    assert rel_err(general, sl.expm(hard)) <= 1e-10
    assert loops[False] < loops[None], loops


def test_max_squarings_caps_with_nan():
    a, _ = _batch(np.float64), None
    with jax.enable_x64(True):
        full, info = jexpm.expm(a, return_info=True)
        s = np.asarray(info.squarings)
        cap = int(np.median(s))
        capped = np.asarray(jexpm.expm(a, max_squarings=cap))
        assert np.all(np.isnan(capped[s > cap])) and (s > cap).any()
        np.testing.assert_array_equal(capped[s <= cap], np.asarray(full)[s <= cap])
        # A cap no member reaches changes nothing.
        np.testing.assert_array_equal(jexpm.expm(a, max_squarings=int(s.max())), full)
        # jax.scipy's default of 16 gives NaN on Moler's badly scaled matrix; jexpm
        # needs fewer squarings there (its overscaling control) and stays finite.
        moler = np.array([[1.0, 1e-4, 1e4], [1e-4 * 0, 1.0, 1e4], [0.0, 0.0, 1.0]])
        assert np.all(np.isfinite(jexpm.expm(moler, max_squarings=16)))
    for bad, err in ((-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="max_squarings"):
            jexpm.expm(a, max_squarings=bad)


def test_expm_lowrank_info_is_that_of_its_phi1():
    u = jax.random.normal(jax.random.key(0), (5, 6, 2))
    v = 3.0 * jax.random.normal(jax.random.key(1), (5, 2, 6))
    value, info = jexpm.expm_lowrank(u, v, return_info=True)
    np.testing.assert_array_equal(value, jexpm.expm_lowrank(u, v))
    _, expected = jexpm.phi1(v @ u, return_info=True)
    for got, want in zip(info, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert info.order.shape == (5,)
