"""Forward mode through flows._backend's convolution and ELU, and reverse mode unchanged.

Both are custom JVPs whose tangents transpose by flows' own rules (the loop-friendly
convolution gradients, ELU's derivative read from its output). Here: ``jax.jvp`` through
a coupling and a small Glow against central differences in float64 and against the same
model on JAX's own ``lax.conv_general_dilated`` and ``jax.nn.elu`` (the "pure" model);
gradients against that model; ``vmap`` of the convolution in each argument.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import flows
from flows import _backend
from tests.helpers import enable_x64

NHWC = ("NHWC", "HWIO", "NHWC")
TINY: dict[str, Any] = dict(levels=2, steps_per_level=(2, 1), hidden_channels=8, residual_blocks=1)


@pytest.fixture
def pure(monkeypatch):
    """A context in which models build and run on lax's convolution and jax.nn.elu."""

    class Pure:
        def __enter__(self):
            monkeypatch.setitem(_backend.TUNING, "cpu", _backend.ACCELERATOR)  # pyright: ignore[reportArgumentType]
            monkeypatch.setattr(_backend, "elu", jax.nn.elu)

        def __exit__(self, *exc):
            monkeypatch.undo()

    return Pure()


def _random_like(tree, seed: int, scale: float = 1.0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)],
    )


def _central_difference(f, args, directions, h=1e-6):
    def moved(sign):
        return f(*jax.tree.map(lambda a, d: a + sign * h * d, args, directions))

    return jax.tree.map(lambda p, m: (p - m) / (2 * h), moved(1), moved(-1))


def _assert_close(got, want, rtol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = float(jnp.max(jnp.abs(w)))
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * max(scale, 1e-30))


def _split(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return lambda p, x: nnx.merge(graphdef, p, rest).forward_and_log_det(x), params


# ------------------------------------------------------------------- the convolution


def _conv_inputs(dtype=jnp.float32, batch=2):
    kx, kw = jax.random.split(jax.random.key(0))
    return (
        jax.random.normal(kx, (batch, 5, 4, 3), dtype),
        jax.random.normal(kw, (3, 3, 3, 4), dtype),
    )


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (1, 1))])
def test_convolution_jvp_matches_lax(padding):
    x, w = _conv_inputs()
    dx, dw = _random_like((x, w), 1)
    args = {"window_strides": (1, 1), "padding": padding, "dimension_numbers": NHWC}
    got = jax.jvp(lambda x, w: _backend.conv_general_dilated(x, w, **args), (x, w), (dx, dw))
    want = jax.jvp(lambda x, w: lax.conv_general_dilated(x, w, **args), (x, w), (dx, dw))
    _assert_close(got, want, 1e-5)
    # Forward over reverse: the gradient's own tangent.
    loss = lambda conv: lambda w: jnp.sum(jnp.sin(conv(x, w, **args)))  # noqa: E731
    hvp = [
        jax.jvp(jax.grad(loss(conv)), (w,), (dw,))[1]
        for conv in (_backend.conv_general_dilated, lax.conv_general_dilated)
    ]
    _assert_close(hvp[0], hvp[1], 1e-5)


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0), (1, 4)])
def test_convolution_under_vmap_matches_lax(in_axes):
    x, w = _conv_inputs()
    xs = jnp.stack([x, 2 * x, -x]) if in_axes[0] == 0 else x
    ws = jnp.stack([w, -w, 0.5 * w]) if in_axes[1] == 0 else w
    if in_axes == (1, 4):
        xs, ws = jnp.stack([x, 2 * x, -x], 1), jnp.stack([w, -w, 0.5 * w], 4)

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC)))

    for transform in (
        lambda f: f,
        lambda f: jax.grad(f, argnums=(0, 1)),
        lambda f: lambda x, w: jax.jvp(f, (x, w), (jnp.ones_like(x), jnp.cos(w)))[1],
    ):
        got = jax.vmap(transform(loss(_backend.conv_general_dilated)), in_axes)(xs, ws)
        want = jax.vmap(transform(loss(lax.conv_general_dilated)), in_axes)(xs, ws)
        _assert_close(got, want, 1e-5)


def test_convolution_hessian_matches_lax():
    x, w = _conv_inputs(batch=1)
    w = w[:, :, :2, :2]
    x = x[..., :2]

    def loss(conv):
        return lambda w: jnp.sum(jnp.sin(conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC)))

    got = jax.hessian(loss(_backend.conv_general_dilated))(w)
    want = jax.hessian(loss(lax.conv_general_dilated))(w)
    _assert_close(got, want, 1e-5)


# -------------------------------------------------------------------------------- ELU


def test_elu_forward_mode_equals_jax_nn_elu():
    x = jnp.asarray([-30.0, -3.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 40.0, jnp.nan])
    t = jnp.linspace(-1.0, 2.0, x.size)
    y, dy = jax.jvp(_backend.elu, (x,), (t,))
    y_want, dy_want = jax.jvp(jax.nn.elu, (x,), (t,))
    np.testing.assert_array_equal(y, y_want)
    # e^x read as elu(x) + 1: agrees to one unit of 1 (JAX's rule for expm1 does the same).
    np.testing.assert_allclose(dy, dy_want, rtol=0, atol=4 * float(jnp.finfo(x.dtype).eps))
    finite = x[:-1]
    np.testing.assert_allclose(
        jax.jacfwd(_backend.elu)(finite), jax.jacrev(_backend.elu)(finite), rtol=0, atol=0
    )
    second = jax.vmap(jax.jacfwd(jax.jacfwd(_backend.elu)))(finite)
    second_want = jax.vmap(jax.jacfwd(jax.jacfwd(jax.nn.elu)))(finite)
    np.testing.assert_allclose(second, second_want, rtol=4e-7, atol=1e-30)


# ------------------------------------------------------------- couplings and the Glow


@pytest.mark.parametrize("coupling", ["matrix_exp", "affine"])
def test_coupling_jvp_matches_finite_differences_and_the_pure_model(coupling, pure):
    with enable_x64():
        options = flows.GlowOptions(hidden_channels=8, residual_blocks=1, param_dtype=jnp.float64)

        def build():
            layer = flows.COUPLINGS[coupling](6, options, rngs=nnx.Rngs(0))
            f, params = _split(layer)
            # Off the zero-initialised output layer, so every convolution and ELU counts.
            return f, jax.tree.map(jnp.add, params, _random_like(params, 2, 0.3))

        f, params = build()
        x = jax.random.normal(jax.random.key(1), (2, 4, 4, 6), jnp.float64)
        directions = (_random_like(params, 3), _random_like(x, 4))
        out, tangent = jax.jvp(f, (params, x), directions)
        assert float(jnp.max(jnp.abs(tangent[1]))) > 0  # the log-det moves too
        _assert_close(tangent, _central_difference(f, (params, x), directions), 1e-7)
        with pure:
            f_pure, params_pure = build()
            want = jax.jvp(f_pure, (params_pure, x), directions)
        _assert_close((out, tangent), want, 1e-12)
        # jax.linearize gives the same tangent.
        _assert_close(jax.linearize(f, params, x)[1](*directions), tangent, 1e-12)
        # jacfwd (a vmap of jvp) and jacrev agree on the log-det's derivative in x.
        log_det = lambda x: f(params, x)[1]  # noqa: E731
        _assert_close(jax.jacfwd(log_det)(x), jax.jacrev(log_det)(x), 1e-12)


def _tiny_glow(**kw):
    options = flows.GlowOptions(**{**TINY, "steps_per_level": (1, 1), **kw})
    model = flows.Glow((8, 8, 3), options, rngs=nnx.Rngs(0))
    model.initialize(jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), options.param_dtype))
    return _split(model)


def test_glow_jvp_matches_finite_differences():
    with enable_x64():
        x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), jnp.float64)
        # Couplings through the action: they start at multiples of I (zero output layer),
        # where the action once took no term and so lost the derivative's part off the
        # multiples of I (2.7e-2 relative on the latents here).
        f, params = _tiny_glow(coupling_action=True, param_dtype=jnp.float64)
        directions = (_random_like(params, 3, 0.1), _random_like(x, 4))
        tangent = jax.jvp(f, (params, x), directions)[1]
        assert float(jnp.max(jnp.abs(tangent[1]))) > 0
        _assert_close(tangent, _central_difference(f, (params, x), directions), 1e-6)


def test_glow_gradient_equals_the_pure_model(pure):
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))

    def gradient():
        f, params = _tiny_glow(levels=1, steps_per_level=(2,))
        return jax.grad(lambda p: jnp.sum(f(p, x)[1]) + sum(jnp.sum(z**2) for z in f(p, x)[0]))(
            params
        )

    got = gradient()
    with pure:
        want = gradient()
    _assert_close(jax.tree.leaves(got), jax.tree.leaves(want), 1e-5)
