"""flows._backend: ELU from its output and recomputed layers; same values, fewer residuals."""

from __future__ import annotations

import contextlib
import io
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

import flows
from flows import _backend, _couplings
from tests.helpers import enable_x64

POINTS = [-30.0, -3.0, -1.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3, 0.5, 2.0, 40.0]


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.float64, jnp.bfloat16], ids=lambda d: d.__name__
)
def test_values_and_derivatives_equal_jax_nn_elu(dtype):
    with enable_x64():
        _check_against_jax_nn_elu(jnp.asarray(POINTS, dtype))


def _check_against_jax_nn_elu(x):
    dtype = x.dtype
    np.testing.assert_array_equal(_backend.elu(x), jax.nn.elu(x))
    for ours, theirs in (
        (jax.vmap(jax.grad(_backend.elu)), jax.vmap(jax.grad(jax.nn.elu))),
        (jax.vmap(jax.grad(jax.grad(_backend.elu))), jax.vmap(jax.grad(jax.grad(jax.nn.elu)))),
    ):
        got, want = np.asarray(ours(x), np.float64), np.asarray(theirs(x), np.float64)
        # JAX's rule for expm1 also reads e^x as its output + 1, so the two agree to
        # rounding.
        np.testing.assert_allclose(got, want, rtol=2 * float(jnp.finfo(dtype).eps), atol=0)


def test_derivative_against_the_closed_form_in_float64():
    x = np.linspace(-8.0, 8.0, 161)
    with enable_x64():
        got = jax.vmap(jax.grad(_backend.elu))(jnp.asarray(x, jnp.float64))
    # e^x read as elu(x) + 1 is exact to about one unit of 1, not of e^x (JAX's own
    # rule for expm1 rounds the same way).
    want = np.where(x > 0, 1.0, np.exp(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * np.finfo(np.float64).eps)


def test_non_finite_input_gives_non_finite_output_and_gradient():
    x = jnp.asarray([jnp.nan, jnp.inf, -jnp.inf], jnp.float32)
    y, pullback = jax.vjp(_backend.elu, x)
    np.testing.assert_array_equal(y, jax.nn.elu(x))
    (g,) = pullback(jnp.ones_like(x))
    assert np.isnan(g[0]) and g[1] == 1.0 and g[2] == 0.0


def _saved_residuals(f, *args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_saved_residuals(f, *args)
    return out.getvalue()


def test_the_gradient_keeps_only_the_output():
    x = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4)
    ours = _saved_residuals(lambda x: _backend.elu(x).sum(), x)
    theirs = _saved_residuals(lambda x: jax.nn.elu(x).sum(), x)
    assert _residual_elements(ours) == [x.size] and "f32[3,4]" in ours, ours
    assert len(_residual_elements(theirs)) > 1  # JAX's rule keeps more (the mask of x > 0, e^x)


def _residual_elements(report: str) -> list[int]:
    """Element counts of the residuals in a print_saved_residuals report, arguments aside."""
    counts = []
    for line in report.splitlines():
        if "from the argument" in line:
            continue
        dims = re.match(r"\s*\w+\[([\d,]*)\]", line).group(1)  # e.g. f32[3,2,8,8,32]
        counts.append(math.prod(int(d) for d in dims.split(",") if d))
    return counts


@pytest.mark.parametrize("blocks", [1, 3])
def test_a_coupling_network_keeps_its_convolutions_inputs_and_little_else(blocks):
    options = flows.GlowOptions(hidden_channels=32, residual_blocks=blocks)
    net = _couplings.ConvNet(6, 42, options, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net)
    x = jnp.ones((2, 8, 8, 6))
    report = _saved_residuals(lambda p, x: nnx.merge(graphdef, p)(x).sum(), params, x)
    hidden = 2 * 8 * 8 * 32  # one hidden activation
    # LayerNorm's input, the first ELU's output, four per residual block (the blocks'
    # scan keeps each block's input and its three ELU outputs) and the blocks' result.
    # JAX's own rules kept 28 arrays here (masks, e^x, LayerNorm's intermediates).
    assert sum(_residual_elements(report)) <= (3 + 4 * blocks) * hidden, report


def test_the_coupling_parametrisation_keeps_only_the_network_output():
    options = flows.GlowOptions(hidden_channels=8, residual_blocks=0, coupling_action=False)
    coupling = _couplings.MatrixExpCoupling(12, options, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(coupling)
    raw = jnp.linspace(-1.0, 1.0, 2 * 4 * 4 * 36).reshape(2, 4, 4, 36)
    report = _saved_residuals(
        lambda p, raw: nnx.merge(graphdef, p).generator(raw).sum(), params, raw
    )
    # Only the raw network output (recomputed: tanh, and 1 - tanh² for its derivative).
    assert sum(_residual_elements(report)) <= raw.size, report
