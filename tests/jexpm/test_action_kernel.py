"""The fused kernels of the action (jexpm/_action_kernel.py), run in Pallas's interpret mode.

The kernels must take the XLA path's path (orders, steps and the n x n products of the
norms of powers identical; the Taylor terms summed identical but where a sum's
termination test is within rounding, ``_same_products``) and agree with its values,
tangents and transposes to rounding, for float32 and float64, one vector and a small
block, 1-norms from 1e-3 to 1e3 (one step to dozens, early terminations everywhere), a
NaN member, a zero member, a stiff (formed) member, and batches that are not a whole
number of tiles. Where the steps' sums cancel (large norms), rounding in another
summation order is amplified by the cancellation for both paths alike: there the
kernel's error against mpmath must be of the XLA path's size (``_agree``). The GPU
programs' lowering is tested with the expm kernels' in test_kernel.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from jexpm import _action_kernel, _multiply, _options, _tuning
from tests.helpers import EPS, random_with_norm, rel_err

#: (n, k, members, largest 1-norm): 25 and 37 members are partial tiles at n <= 6 (64 and
#: 256 lanes); 9 members at n = 24 are two whole tiles of 4 lanes and a partial one.
CASES = ((6, 1, 25, 1e3), (6, 3, 25, 1e3), (3, 1, 37, 1e3), (24, 1, 9, 1e2))
#: Norms up to which the two paths must agree to rounding.
SMALL = 30.0


def _ctx(dtype):
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def _inputs(n, k, members, top, dtype):
    rng = np.random.default_rng(n + 10 * k)
    norms = np.geomspace(1e-3, top, members)
    x = np.stack([random_with_norm(rng, (n, n), v, dtype) for v in norms])
    x[2, 0, 0] = np.nan  # non-finite: NaN, steps 0
    x[4] = 0  # zero: order 1 (one zero term), F = B
    if n == 6:
        x[5] *= 1e6 / norms[5]  # stiff: formed by the caller, the steps leave B
    b = rng.standard_normal((members, n, k)).astype(dtype)
    dx = rng.standard_normal(x.shape).astype(dtype)
    db = rng.standard_normal(b.shape).astype(dtype)
    return (jnp.asarray(v) for v in (x, b, dx, db))


def _mp(x) -> mpmath.matrix:
    return mpmath.matrix(np.asarray(x, np.float64).tolist())


def _mp_action(x, b):
    """e^X B at 40 digits, rounded to float64."""
    with mpmath.workdps(40):
        return np.array((mpmath.expm(_mp(x)) * _mp(b)).tolist(), dtype=np.float64)


def _mp_tangent(x, b, dx, db):
    """d/dh e^(X + h dX) (B + h dB) at h = 0, by a difference at h = 1e-20 in 60 digits."""
    h = mpmath.mpf("1e-20")
    with mpmath.workdps(60):
        e = mpmath.expm(_mp(x))
        e_h = mpmath.expm(_mp(x) + h * _mp(dx))
        y = (e_h - e) * _mp(b) / h + e * _mp(db)
        return np.array(y.tolist(), dtype=np.float64)


def _agree(got, want, x, path, dtype, reference, per_step=8):
    """Per member: to rounding where ||X||_1 <= SMALL, else as accurate as XLA.

    Members that overflow must overflow in both (where Inf meets Inf, NaN or Inf
    depends on the order of the sums).

    Beyond SMALL the error against mpmath must be within 4 times the XLA path's or
    ``per_step`` u per step (each step's rounding, amplified by the cancellation in its sum,
    scatters with the summation order; measured up to 120 u at 39 steps against
    the XLA path's 15 u, and the other way round as often).

    Formed members (order -1) agree to rounding: the steps leave B (or dB) as it is.
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.all(np.isfinite(want), axis=(-2, -1))
    np.testing.assert_array_equal(np.all(np.isfinite(got), axis=(-2, -1)), finite)
    eps = EPS[np.dtype(dtype)]
    order, steps = np.asarray(path.order), np.asarray(path.steps)
    norms = np.abs(np.asarray(x, np.float64)).sum(axis=-2).max(axis=-1)
    for i in np.flatnonzero(finite):
        if np.all(want[i] == 0):
            np.testing.assert_array_equal(got[i], want[i])
        elif norms[i] <= SMALL or order[i] == -1:
            assert rel_err(got[i], want[i]) <= 64 * eps, i
        else:
            ref = reference(i)
            bound = max(4 * rel_err(want[i], ref), per_step * steps[i] * eps)
            assert rel_err(got[i], ref) <= bound, i


def _same_products(count, count_xla, steps):
    """The Taylor terms summed: equal, but for a rare sum ending a term apart.

    A sum ends once two terms are below tol ||F||; where that comparison is within
    rounding, another summation order can end it a term earlier or later (as the XLA
    path on another backend can). Measured: 1 member in 25 at 8 steps, one term.
    """
    count, count_xla, steps = (np.asarray(v) for v in (count, count_xla, steps))
    apart = np.flatnonzero(count != count_xla)
    assert len(apart) <= max(1, len(count) // 20), apart
    assert np.all(np.abs(count - count_xla)[apart] <= steps[apart]), apart


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("n", "k", "members", "top"), CASES)
def test_the_kernel_takes_the_xla_path_and_its_values(dtype, n, k, members, top):
    with _ctx(dtype):
        x, b, _, _ = _inputs(n, k, members, top, dtype)
        tol = _options.tolerance(None, x.dtype)
        assert _action_kernel.covers(x, b, _tuning.GPU)
        kernel = jax.jit(lambda x, b: _action_kernel.compute(tol, x, b, interpret=True))(x, b)
        xla = jax.jit(lambda x, b: _multiply._compute(tol, x, b))(x, b)
        (f, path, count, spent), (f_xla, path_xla, count_xla, spent_xla) = kernel, xla
        for name, got, want in zip(
            ("order", "steps", "matrix products"),
            (*path, spent),
            (*path_xla, spent_xla),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
        _same_products(count, count_xla, path.steps)
        steps, order = np.asarray(path.steps), np.asarray(path.order)
        assert steps[2] == 0 and order[4] == 1 and steps.max() >= 3
        if n == 6:
            assert order[5] == -1  # formed: B comes back as it is
            np.testing.assert_array_equal(np.asarray(f[5]), np.asarray(b[5]))
        assert np.all(np.isnan(np.asarray(f[2])))
        _agree(f, f_xla, x, path, dtype, lambda i: _mp_action(x[i], b[i]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("n", "k", "members", "top"), CASES)
def test_the_tangent_kernel(dtype, n, k, members, top):
    """dF at the path of the value, in a direction (dX, dB): the tangent primitive's value."""
    with _ctx(dtype):
        x, b, dx, db = _inputs(n, k, members, top, dtype)
        tol = _options.tolerance(None, x.dtype)
        _, path, _, _ = jax.jit(lambda x, b: _multiply._compute(tol, x, b))(x, b)
        got = jax.jit(lambda *a: _action_kernel.tangent(tol, *a, interpret=True))(
            x, b, dx, db, *path
        )
        want = jax.jit(lambda *a: _multiply._tangent_impl(*a, tol=tol))(x, b, dx, db, *path)
        reference = lambda i: _mp_tangent(x[i], b[i], dx[i], db[i])  # noqa: E731
        _agree(got, want, x, path, dtype, reference)


def test_covers():
    gpu = _tuning.GPU
    x, vector = jnp.zeros((4, 6, 6)), jnp.zeros((4, 6, 1))
    assert _action_kernel.covers(x, vector, gpu)
    assert _action_kernel.covers(x, jnp.zeros((4, 6, 8)), gpu)
    assert not _action_kernel.covers(x, jnp.zeros((4, 6, 9)), gpu)  # wider than side(6)
    assert not _action_kernel.covers(x, jnp.zeros((4, 6, 0)), gpu)
    assert not _action_kernel.covers(x.astype(jnp.complex64), vector.astype(jnp.complex64), gpu)
    assert not _action_kernel.covers(jnp.zeros((4, 48, 48)), jnp.zeros((4, 48, 1)), gpu)
    assert not _action_kernel.covers(jnp.zeros((0, 6, 6)), jnp.zeros((0, 6, 1)), gpu)
    assert not _action_kernel.covers(x, vector, _tuning.CPU)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("n", "k", "members", "top"), CASES)
def test_the_transpose_kernel(dtype, n, k, members, top):
    """(gX, gB) at the path of the value for a cotangent G: the transpose primitive's value.

    Against the XLA path's transpose; beyond SMALL within 16 u per step of it (the
    scatter of ``_agree``, larger for the gradient: measured 84 u at 8 steps). With the
    tangent, the pairing identity <G, L(dX, dB)> = <gX, dX> + <gB, dB> holds to rounding.
    """
    with _ctx(dtype):
        x, b, dx, db = _inputs(n, k, members, top, dtype)
        g = db[::-1]
        tol = _options.tolerance(None, x.dtype)
        _, path, _, _ = jax.jit(lambda x, b: _multiply._compute(tol, x, b))(x, b)
        got = jax.jit(lambda *a: _action_kernel.transpose(tol, *a, interpret=True))(x, b, g, *path)
        want = jax.jit(lambda *a: _multiply._transpose_impl(*a, tol=tol))(x, b, g, *path)
        for got_part, want_part in zip(got, want, strict=True):
            _agree(got_part, want_part, x, path, dtype, lambda i, w=want_part: w[i], 16)
        tangent = jax.jit(lambda *a: _action_kernel.tangent(tol, *a, interpret=True))(
            x, b, dx, db, *path
        )
        small = np.asarray((jnp.abs(x).sum(axis=-2).max(axis=-1) <= SMALL) & (path.steps > 0), bool)
        g, tangent, dx, db = (np.asarray(v, np.float64)[small] for v in (g, tangent, dx, db))
        g_x, g_b = (np.asarray(v, np.float64)[small] for v in got)
        pair = np.sum(g * tangent, axis=(1, 2))
        back = np.sum(g_x * dx, axis=(1, 2)) + np.sum(g_b * db, axis=(1, 2))
        scale = np.sum(np.abs(g * tangent), axis=(1, 2))
        assert np.all(np.abs(pair - back) <= 256 * EPS[np.dtype(dtype)] * scale)
