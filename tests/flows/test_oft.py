"""OrthogonalLinear: identity at init, orthogonality, norm limit, frozen weights, training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from flax import nnx
from jax.test_util import check_grads

from flows import OrthogonalLinear
from flows._oft import Frozen

# ‖QᵀQ − I‖_max at ‖S − Sᵀ‖₁ = 3, from the issue (float32: about 8 eps).
ORTHO_TOL = {jnp.float32: 1e-6, jnp.bfloat16: 3e-2}


def _skew_scaled(rng, k, b, norm):
    """S of shape (k, b, b) whose skew part S − Sᵀ has 1-norm ``norm`` per block."""
    s = rng.standard_normal((k, b, b))
    skew_norm = np.abs(s - s.swapaxes(-1, -2)).sum(axis=-2).max(axis=-1)
    return s * (norm / skew_norm)[:, None, None]


def _layer(rng, d_in, d_out, b, *, bias=True, s_norm=None, **kwargs):
    w = rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)
    bias_ = rng.standard_normal(d_out) if bias else None
    layer = OrthogonalLinear(
        jnp.asarray(w, jnp.float32),
        None if bias_ is None else jnp.asarray(bias_, jnp.float32),
        block_size=b,
        rngs=nnx.Rngs(0),
        **kwargs,
    )
    if s_norm is not None:
        layer.s[...] = jnp.asarray(_skew_scaled(rng, d_out // b, b, s_norm), layer.s.dtype)
    return layer


def _oracle(layer, x):
    """x W blockdiag(expm(S_j − S_jᵀ)) + bias in float64 with scipy."""
    s = np.asarray(layer.s[...], np.float64)
    q = scipy.linalg.block_diag(*[scipy.linalg.expm(sj - sj.T) for sj in s])
    w = np.asarray(layer.kernel[...], np.float64)
    y = np.asarray(x, np.float64) @ w @ q
    return y if layer.bias is None else y + np.asarray(layer.bias[...], np.float64)


@pytest.mark.parametrize("bias", [True, False])
def test_identity_at_init(bias):
    rng = np.random.default_rng(0)
    layer = _layer(rng, 5, 12, 4, bias=bias)
    assert layer.s.shape == (3, 4, 4)
    assert not np.any(np.asarray(layer.s[...]))
    np.testing.assert_array_equal(layer.rotation(), np.broadcast_to(np.eye(4), (3, 4, 4)))
    x = jnp.asarray(rng.standard_normal((7, 5)), jnp.float32)
    ref = x @ layer.kernel[...]
    if bias:
        ref = ref + layer.bias[...]
    np.testing.assert_array_equal(layer(x), ref)


def test_from_linear_is_linear_at_init():
    linear = nnx.Linear(6, 8, rngs=nnx.Rngs(1))
    layer = OrthogonalLinear.from_linear(linear, block_size=4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (3, 6))
    np.testing.assert_array_equal(layer(x), linear(x))
    np.testing.assert_array_equal(layer.kernel[...], linear.kernel[...])
    no_bias = nnx.Linear(6, 8, use_bias=False, rngs=nnx.Rngs(1))
    layer = OrthogonalLinear.from_linear(no_bias, block_size=8, rngs=nnx.Rngs(0))
    assert layer.bias is None
    np.testing.assert_array_equal(layer(x), no_bias(x))


@pytest.mark.parametrize("bias", [True, False])
def test_matches_scipy_oracle(bias):
    rng = np.random.default_rng(1)
    layer = _layer(rng, 6, 12, 3, bias=bias, s_norm=2.0)
    x = rng.standard_normal((4, 6))
    y = layer(jnp.asarray(x, jnp.float32))
    assert y.dtype == jnp.float32 and y.shape == (4, 12)
    np.testing.assert_allclose(y, _oracle(layer, x), rtol=1e-5, atol=1e-5)
    # the merged kernel computes the same map as the adapter
    merged = x @ np.asarray(layer.merged_kernel(), np.float64)
    if bias:
        merged = merged + np.asarray(layer.bias[...], np.float64)
    np.testing.assert_allclose(y, merged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("b", [4, 16])
def test_rotation_is_orthogonal(dtype, b):
    rng = np.random.default_rng(2)
    layer = _layer(rng, 3, 4 * b, b, s_norm=3.0, dtype=dtype)
    q = layer.rotation()
    assert q.dtype == dtype and q.shape == (4, b, b)
    q = np.asarray(q.astype(jnp.float32), np.float64)
    err = np.abs(q.swapaxes(-1, -2) @ q - np.eye(b)).max()
    assert err <= ORTHO_TOL[dtype], err
    # and it is the rotation asked for, not just any orthogonal matrix
    ref = np.stack([scipy.linalg.expm(sj - sj.T) for sj in np.asarray(layer.s[...], np.float64)])
    assert np.abs(q - ref).max() <= 8 * ORTHO_TOL[dtype]


def test_max_norm_limits_rotation():
    rng = np.random.default_rng(3)
    max_norm = 0.5
    free = _layer(rng, 4, 16, 8, s_norm=20.0)
    limited = OrthogonalLinear(
        free.kernel[...], free.bias[...], block_size=8, max_norm=max_norm, rngs=nnx.Rngs(0)
    )
    limited.s[...] = free.s[...]

    def angles(q):
        return np.abs(np.angle(np.linalg.eigvals(np.asarray(q, np.float64))))

    assert angles(free.rotation()).max() > 2 * max_norm  # the limit has something to do
    q = np.asarray(limited.rotation(), np.float64)
    assert angles(q).max() <= max_norm + 1e-5
    # the skew part, recovered as the principal logarithm (angles < π), has 1-norm
    # max_norm: scaled down to the limit, not below it
    k = np.stack([scipy.linalg.logm(qj) for qj in q])
    assert np.abs(k.imag).max() < 1e-6
    k_norm = np.abs(k.real).sum(axis=-2).max(axis=-1)
    np.testing.assert_allclose(k_norm, max_norm, rtol=1e-4)
    # a rotation already inside the limit is left alone
    small = _layer(rng, 4, 16, 8, s_norm=0.3)
    small_limited = OrthogonalLinear(
        small.kernel[...], small.bias[...], block_size=8, max_norm=max_norm, rngs=nnx.Rngs(0)
    )
    small_limited.s[...] = small.s[...]
    np.testing.assert_array_equal(small_limited.rotation(), small.rotation())


def _regression(rng, d_in, d_out, b, n, dtype, angle=1.0):
    """A layer at init and (x, y) from the same frozen map rotated by a random Q*."""
    model = _layer(rng, d_in, d_out, b, dtype=dtype)
    teacher = _layer(rng, d_in, d_out, b)
    teacher.kernel[...] = model.kernel[...]
    teacher.bias[...] = model.bias[...]
    teacher.s[...] = jnp.asarray(_skew_scaled(rng, d_out // b, b, angle), jnp.float32)
    x = jnp.asarray(rng.standard_normal((n, d_in)), jnp.float32)
    return model, x, teacher(x)


def _mse(model, x, y):
    return jnp.mean((model(x).astype(jnp.float32) - y) ** 2)


def test_only_s_is_trainable():
    rng = np.random.default_rng(4)
    model, x, y = _regression(rng, 6, 8, 4, 16, jnp.float32)
    assert set(nnx.state(model, nnx.Param).keys()) == {"s"}
    assert set(nnx.state(model, Frozen).keys()) == {"kernel", "bias"}
    grads = nnx.grad(_mse)(model, x, y)
    assert set(grads.keys()) == {"s"}
    g = np.asarray(grads["s"][...])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    kernel, bias = np.asarray(model.kernel[...]), np.asarray(model.bias[...])
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    optimizer.update(model, grads)
    assert np.abs(np.asarray(model.s[...])).max() > 0
    np.testing.assert_array_equal(model.kernel[...], kernel)
    np.testing.assert_array_equal(model.bias[...], bias)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        model = OrthogonalLinear(
            rng.standard_normal((5, 6)),
            rng.standard_normal(6),
            block_size=3,
            max_norm=1.5,
            param_dtype=jnp.float64,
            rngs=nnx.Rngs(0),
        )
        graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
        x = rng.standard_normal((4, 5))

        def f(s):
            return nnx.merge(graphdef, jax.tree.map(lambda _: s, params), frozen)(x)

        # norm 2.4 > max_norm: the norm-limit scaling is differentiated too
        check_grads(f, (jnp.asarray(_skew_scaled(rng, 2, 3, 2.4)),), order=1, modes=["rev"])


def test_gradient_finite_in_bfloat16():
    rng = np.random.default_rng(6)
    model, x, y = _regression(rng, 6, 16, 8, 16, jnp.bfloat16)
    model.s[...] = jnp.asarray(_skew_scaled(rng, 2, 8, 3.0), jnp.float32)
    grads = nnx.grad(_mse)(model, x, y)
    g = grads["s"][...]
    assert g.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_adam_lowers_the_loss(dtype):
    rng = np.random.default_rng(7)
    model, x, y = _regression(rng, 8, 16, 4, 64, dtype)
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_mse)(model, x, y)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x, y)) for _ in range(60)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("block_size", [0, -2, 4, 5, 2.0, True])
def test_bad_block_size_raises(block_size):
    with pytest.raises(ValueError, match=r"d_out = 6 \(kernel shape \(3, 6\)\)"):
        OrthogonalLinear(jnp.ones((3, 6)), block_size=block_size, rngs=nnx.Rngs(0))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"got shape \(6,\)"):
        OrthogonalLinear(jnp.ones(6), block_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"bias must have shape \(d_out,\) = \(6,\).*\(5,\)"):
        OrthogonalLinear(jnp.ones((3, 6)), jnp.ones(5), block_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_norm must be positive"):
        OrthogonalLinear(jnp.ones((3, 6)), block_size=2, max_norm=0.0, rngs=nnx.Rngs(0))
    layer = OrthogonalLinear(jnp.ones((3, 6)), block_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*got shape \(2, 4\)"):
        layer(jnp.ones((2, 4)))


def test_jit_split_merge_and_no_retrace():
    rng = np.random.default_rng(8)
    layer = _layer(rng, 5, 8, 4, s_norm=1.0)
    x = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)
    eager = layer(x)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), eager, rtol=1e-6, atol=1e-6)

    graphdef, state = nnx.split(layer)
    traces = []

    @jax.jit
    def apply(state, x):
        traces.append(None)
        return nnx.merge(graphdef, state)(x)

    np.testing.assert_allclose(apply(state, x), eager, rtol=1e-6, atol=1e-6)
    # new S values, same shapes: same program
    state["s"][...] = state["s"][...] * 2
    layer2 = nnx.merge(graphdef, state)
    np.testing.assert_allclose(apply(state, x), layer2(x), rtol=1e-6, atol=1e-6)
    assert len(traces) == 1
    # batched inputs of any leading shape
    xb = jnp.asarray(rng.standard_normal((2, 3, 5)), jnp.float32)
    np.testing.assert_allclose(
        jax.vmap(layer2)(xb), layer2(xb.reshape(6, 5)).reshape(2, 3, 8), rtol=1e-6, atol=1e-6
    )


def test_preserves_singular_values():
    rng = np.random.default_rng(9)
    layer = _layer(rng, 16, 32, 8, s_norm=3.0)
    sv = np.linalg.svd(np.asarray(layer.kernel[...], np.float64), compute_uv=False)
    merged = np.asarray(layer.merged_kernel(), np.float64)
    assert np.abs(merged - np.asarray(layer.kernel[...])).max() > 0.1  # it did rotate
    sv_merged = np.linalg.svd(merged, compute_uv=False)
    assert np.abs(sv_merged - sv).max() <= 1e-5 * sv.max()
