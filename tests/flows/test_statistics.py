"""(m, s) statistics recorded by the layers under nnx.capture, and only there."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import flows
import jexpm
from flows import _backend


def tiny(method="opt15", **kw):
    options = flows.GlowOptions(
        levels=2,
        steps_per_level=(2, 1),
        hidden_channels=8,
        residual_blocks=1,
        expm_method=method,
        **kw,
    )
    return flows.Glow((8, 8, 3), options, rngs=nnx.Rngs(0))


def x(n=3):
    return _backend.uniform(jax.random.key(1), (n, 8, 8, 3)) - 0.5


def captured_log_prob(model, images):
    return nnx.capture(flows.Glow.log_prob, nnx.Intermediate)(model, images)


def test_nothing_is_recorded_outside_capture():
    model = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in particular no deprecated bare sow
        model.log_prob(x())
        model.sample(jax.random.key(0), 2)
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_captured_statistics_are_jexpms_own_for_every_matrix():
    model = tiny(coupling_action=False)
    model.initialize(x(8))
    images = x()
    _, intermediates = captured_log_prob(model, images)
    stats = flows.expm_statistics(intermediates)
    assert set(stats) == {"1x1 conv", "coupling"}
    # one entry per 1x1 weight (3 steps) and per pixel matrix of the batch
    assert stats["1x1 conv"]["order"].shape == (3,)
    assert stats["coupling"]["order"].shape == (3 * (2 * 4 * 4 + 1 * 2 * 2),)
    # the 1x1 convolutions' entries are what jexpm reports for their weights
    weights = [level.steps.conv.weight[...] for level in model.levels]
    expected = [jexpm.expm(w, return_info=True)[1] for w in weights]
    np.testing.assert_array_equal(
        stats["1x1 conv"]["order"], np.concatenate([np.ravel(e.order) for e in expected])
    )
    np.testing.assert_array_equal(
        stats["1x1 conv"]["squarings"], np.concatenate([np.ravel(e.squarings) for e in expected])
    )
    assert set(np.unique(stats["coupling"]["order"])) <= {1, 2, 4, 8, 15}
    # capturing leaves no state behind in the model
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_couplings_on_the_action_report_its_order_and_steps():
    model = tiny()  # level 1 forms its 6x6 exponentials, level 2 applies its 12x12 ones
    _, intermediates = captured_log_prob(model, x())
    stats = flows.expm_statistics(intermediates)
    assert set(stats) == {"1x1 conv", "coupling", "coupling action"}
    assert stats["coupling"]["order"].shape == (3 * 2 * 4 * 4,)
    action = stats["coupling action"]
    assert action["order"].shape == action["steps"].shape == (3 * 2 * 2,)
    # at initialisation S = 0 (the network's last convolution is zero): one step of one
    # (zero) Taylor term, which keeps the derivative in S exact
    assert bool(jnp.all(action["steps"] == 1)) and bool(jnp.all(action["order"] == 1))


def test_low_rank_couplings_report_their_phi1():
    model = tiny(low_rank=True, rank=2)
    _, intermediates = captured_log_prob(model, x())
    coupling = flows.expm_statistics(intermediates)["coupling"]
    assert coupling["order"].shape == coupling["squarings"].shape == (3 * (2 * 4 * 4 + 4),)


def test_methods_without_info_report_nothing():
    _, intermediates = captured_log_prob(tiny("jax.scipy"), x())
    assert flows.expm_statistics(intermediates) == {}


def test_statistics_under_jit_and_grad():
    model = tiny()
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        out, intermediates = captured_log_prob(nnx.merge(graphdef, p), x())
        return -jnp.mean(out), flows.expm_statistics(intermediates)

    (_, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert stats["coupling"]["order"].dtype == jnp.int32
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
