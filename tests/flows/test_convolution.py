"""The loop-friendly convolution: same values and gradients as lax, canonical in loops."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from flows import _backend

NHWC = ("NHWC", "HWIO", "NHWC")


def _inputs(kernel, c_in=3, c_out=5, dtype=jnp.float32):
    kx, kw = jax.random.split(jax.random.key(0))
    x = _backend.normal(kx, (2, 7, 6, c_in), dtype)
    w = _backend.normal(kw, (*kernel, c_in, c_out), dtype)
    return x, w


def _loss(conv, x, w, **kwargs):
    y = conv(x, w, **kwargs)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)


@pytest.mark.parametrize(
    "kernel,padding",
    [
        ((3, 3), "SAME"),
        ((1, 1), "SAME"),
        ((3, 3), "VALID"),
        ((3, 2), ((2, 0), (1, 1))),
        ((5, 3), ((0, 1), (2, 2))),
    ],
)
def test_values_and_gradients_match_lax(kernel, padding):
    x, w = _inputs(kernel)
    args = {"window_strides": (1, 1), "padding": padding, "dimension_numbers": NHWC}
    want = lax.conv_general_dilated(x, w, **args)
    got = _backend.conv_general_dilated(x, w, **args)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    grad_want = jax.grad(_loss, argnums=(1, 2))(lax.conv_general_dilated, x, w, **args)
    grad_got = jax.grad(_loss, argnums=(1, 2))(_backend.conv_general_dilated, x, w, **args)
    for g, h in zip(grad_got, grad_want, strict=True):
        assert g.shape == h.shape
        np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(h))))


def test_other_convolutions_go_through_lax():
    # Strided, dilated and NCHW convolutions are outside the custom rule: unchanged.
    x, w = _inputs((3, 3))
    for args in (
        {"window_strides": (2, 1), "padding": "SAME", "dimension_numbers": NHWC},
        {
            "window_strides": (1, 1),
            "padding": "SAME",
            "rhs_dilation": (2, 2),
            "dimension_numbers": NHWC,
        },
    ):
        want = jax.grad(_loss, argnums=2)(lax.conv_general_dilated, x, w, **args)
        got = jax.grad(_loss, argnums=2)(_backend.conv_general_dilated, x, w, **args)
        np.testing.assert_array_equal(got, want)
    x_nchw = jnp.transpose(x, (0, 3, 1, 2))
    w_oihw = jnp.transpose(w, (3, 2, 0, 1))
    np.testing.assert_array_equal(
        _backend.conv_general_dilated(x_nchw, w_oihw, (1, 1), "SAME"),
        lax.conv_general_dilated(x_nchw, w_oihw, (1, 1), "SAME"),
    )


def test_second_derivative_matches_lax():
    x, w = _inputs(
        (3, 3), c_in=2, c_out=2, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    )
    args = {"window_strides": (1, 1), "padding": "SAME", "dimension_numbers": NHWC}

    def grad_norm(conv, w):
        g = jax.grad(_loss, argnums=1)(conv, x, w, **args)
        return jnp.sum(g**2)

    want = jax.grad(grad_norm, argnums=1)(lax.conv_general_dilated, w)
    got = jax.grad(grad_norm, argnums=1)(_backend.conv_general_dilated, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's loop-body form")
def test_gradient_convolutions_in_a_scan_stay_nhwc():
    # The reason the module exists: inside a while loop XLA:CPU leaves convolutions in
    # the form they were written, and only NHWC/HWIO reaches its fast kernel.
    x, w = _inputs((3, 3), c_in=4, c_out=4)
    ws = jnp.stack([w, 2 * w])

    def labels(conv):
        def loss(ws):
            def body(h, w):
                return jnp.tanh(conv(h, w, (1, 1), "SAME", dimension_numbers=NHWC)), None

            return jnp.sum(lax.scan(body, x, ws)[0])

        hlo = jax.jit(jax.grad(loss)).lower(ws).compile().as_text()
        return {m for m in re.findall(r"dim_labels=([^,\s]+)", hlo)}

    assert labels(_backend.conv_general_dilated) == {"b01f_01io->b01f"}
    # JAX's own transposition rule gives other forms: the check can fail.
    assert labels(lax.conv_general_dilated) != {"b01f_01io->b01f"}
