"""The multi-scale Glow: shapes, invertibility, densities, training signal and errors."""

from __future__ import annotations

import math

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flows
from flows import _backend

TINY = dict(levels=2, steps_per_level=(2, 1), hidden_channels=8, residual_blocks=1)


def tiny(method="opt15", seed=0, **kw):
    options = flows.GlowOptions(**{**TINY, **kw}, expm_method=method)
    return flows.Glow((8, 8, 3), options, rngs=nnx.Rngs(seed))


def images(n=4, seed=0):
    return jax.random.randint(jax.random.key(seed), (n, 8, 8, 3), 0, 256).astype(jnp.uint8)


def data(n=4, seed=0):
    return flows.dequantize(images(n, seed), jax.random.key(seed + 1))


@nnx.jit
def encode(model, x):
    return model.forward_and_log_det(x)


@nnx.jit
def decode(model, latents):
    return model.inverse_and_log_det(latents)


def test_paper_architecture_by_default():
    """3 levels of 8/4/2 steps on 32x32x3; couplings exponentiate 6x6, 12x12, 24x24 per pixel."""
    model = nnx.eval_shape(lambda: flows.Glow(rngs=nnx.Rngs(0)))
    # each level's steps are one FlowStep with parameters stacked along a leading axis
    assert [level.steps.actnorm.shift.shape[0] for level in model.levels] == [8, 4, 2]
    sizes = [level.steps.coupling.c2 for level in model.levels]
    assert sizes == [6, 12, 24]
    assert not any(level.steps.coupling.low_rank for level in model.levels)
    conv_in = model.levels[0].steps.coupling.net.conv_in
    assert conv_in.out_features == 128
    assert conv_in.kernel.shape == (8, 3, 3, 6, 128)
    assert model.levels[0].steps.coupling.net.blocks.conv1.kernel.shape[:2] == (8, 8)
    assert [level.split is not None for level in model.levels] == [True, True, False]
    assert model.latent_shapes == ((16, 16, 6), (8, 8, 12), (4, 4, 48))
    assert sum(math.prod(s) for s in model.latent_shapes) == 32 * 32 * 3


def test_imagenet64_top_level_goes_low_rank():
    model = nnx.eval_shape(
        lambda: flows.Glow(
            (64, 64, 3), flows.GlowOptions(levels=4, steps_per_level=2), rngs=nnx.Rngs(0)
        )
    )
    c2 = [level.steps.coupling.c2 for level in model.levels]
    low = [level.steps.coupling.low_rank for level in model.levels]
    assert c2 == [6, 12, 24, 48]
    assert low == [False, False, False, True]


def test_encode_decode_round_trip_and_log_dets():
    model = tiny()
    x = data()
    model.initialize(x)
    latents, log_det = encode(model, x)
    assert [z.shape[1:] for z in latents] == list(model.latent_shapes)
    x_back, log_det_inv = decode(model, latents)
    assert float(jnp.linalg.norm(x_back - x) / jnp.linalg.norm(x)) <= 1e-4
    np.testing.assert_allclose(log_det_inv, -log_det, rtol=1e-4, atol=1e-3)


def test_sample_then_encode_returns_the_latents():
    model = tiny()
    model.initialize(data(16))
    key = jax.random.key(7)
    x = nnx.jit(lambda m: m.sample(key, 3, temperature=0.7))(model)
    assert x.shape == (3, 8, 8, 3)
    keys = jax.random.split(key, len(model.latent_shapes))
    expected = [
        0.7 * _backend.normal(k, (3, *s)) for k, s in zip(keys, model.latent_shapes, strict=True)
    ]
    latents, _ = encode(model, x)
    for z, e in zip(latents, expected, strict=True):
        np.testing.assert_allclose(z, e, atol=2e-4)


def test_initialize_normalises_the_first_actnorm():
    model = tiny()
    x = data(64)
    model.initialize(x)
    first = jax.tree.map(lambda p: p[0], nnx.state(model.levels[0].steps.actnorm))
    actnorm = flows.ActNorm(4, 4, 12, rngs=nnx.Rngs(0))
    nnx.update(actnorm, first)
    y, _ = actnorm.forward_and_log_det(flows.Squeeze().forward(x))
    np.testing.assert_allclose(jnp.mean(y, axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.std(y, axis=0), 1.0, atol=1e-3)
    # every later step was initialised from the activations reaching it: all differ
    shifts = model.levels[0].steps.actnorm.shift[...]
    assert not np.allclose(shifts[0], shifts[1])


def test_bits_per_dim_is_the_change_of_variables_formula():
    model = tiny()
    imgs = images()
    key = jax.random.key(3)
    bpd = model.bits_per_dim(imgs, key)
    latents, log_det = model.forward_and_log_det(flows.dequantize(imgs, key))
    log_pz = sum(jax.scipy.stats.norm.logpdf(z).sum(axis=(1, 2, 3)) for z in latents)
    d = 8 * 8 * 3
    expected = -(log_pz + log_det - d * math.log(256)) / (d * math.log(2))
    assert bpd.shape == (4,)
    np.testing.assert_allclose(bpd, expected, rtol=1e-5)
    # an untrained model on uniform noise: about 8 bits (log2 of 256 levels) per dim or more
    assert 6.0 < float(jnp.mean(bpd)) < 20.0


@pytest.mark.parametrize("method", ["ps", "baseline", "jax.scipy"])
def test_every_method_gives_the_same_density(method):
    x = data()
    reference = tiny("opt15")
    other = tiny(method)  # same seed: same parameters, only the exponential differs
    params = nnx.state(reference, nnx.Param)
    perturbed = jax.tree.map(
        lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size)).reshape(p.shape), params
    )
    nnx.update(reference, perturbed)
    nnx.update(other, perturbed)
    np.testing.assert_allclose(
        nnx.jit(lambda m, x: m.log_prob(x))(other, x),
        nnx.jit(lambda m, x: m.log_prob(x))(reference, x),
        rtol=1e-5,
    )


@pytest.mark.parametrize("coupling", flows.COUPLINGS)
def test_a_few_adamax_steps_lower_the_loss(coupling):
    model = tiny(coupling=coupling)
    imgs = images(8)
    model.initialize(flows.dequantize(imgs, jax.random.key(0)))
    optimizer = nnx.Optimizer(model, optax.adamax(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, key):
        def loss_fn(model):
            return jnp.mean(model.bits_per_dim(imgs, key))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    key = jax.random.key(0)
    losses = [float(step(model, optimizer, key)) for _ in range(15)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.05


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*levels = 8.*\(12, 12, 3\)"):
        flows.Glow((12, 12, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="steps_per_level must be"):
        flows.GlowOptions(levels=2, steps_per_level=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown coupling 'spline'"):
        flows.GlowOptions(levels=2, steps_per_level=1, coupling="spline")
    with pytest.raises(ValueError, match="unknown expm method"):
        flows.GlowOptions(levels=2, steps_per_level=1, expm_method="pade")
    with pytest.raises(ValueError, match="image_shape must be"):
        flows.Glow((8, 8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unroll must be True, False or an int >= 1, got 0"):
        flows.GlowOptions(levels=2, steps_per_level=1, scan_unroll=0)


def test_bad_inputs_raise():
    model = tiny()
    with pytest.raises(ValueError, match=r"height x width \(8, 8\).*\(2, 16, 16, 3\)"):
        model.log_prob(jnp.zeros((2, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 8, 8, 1\)"):
        model.log_prob(jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\).*\(8, 8, 3\)"):
        model.log_prob(jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="expected latents of shapes"):
        model.inverse_and_log_det([jnp.zeros((1, 4, 4, 6))])
    with pytest.raises(TypeError, match="uint8"):
        flows.dequantize(jnp.zeros((1, 8, 8, 3)), jax.random.key(0))


def test_to_uint8_inverts_dequantize():
    imgs = images()
    np.testing.assert_array_equal(flows.to_uint8(flows.dequantize(imgs, jax.random.key(1))), imgs)


def test_scanned_steps_run_under_plain_jax_transforms_of_a_closure():
    """jax.jit and jax.grad of a function that closes over the model (no nnx.jit)."""
    model = tiny()
    x = data()
    expected = model.log_prob(x)
    np.testing.assert_allclose(jax.jit(lambda v: model.log_prob(v))(x), expected, rtol=1e-6)
    g = jax.grad(lambda v: jnp.sum(model.log_prob(v)))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


def _unroll_model(unroll):
    model = tiny(levels=1, steps_per_level=(3,), residual_blocks=2, scan_unroll=unroll)
    model.initialize(data())
    return model


def _unroll_loss(model, x):
    return -jnp.mean(model.log_prob(x))


@pytest.fixture(scope="module")
def rolled():
    """The scan_unroll=1 model of the test below, initialised, with its loss and gradient.

    Built and compiled once for both parametrizations, which only read it.
    """
    model = _unroll_model(1)
    return model, nnx.jit(nnx.value_and_grad(_unroll_loss))(model, data())


@pytest.mark.parametrize("unroll", [2, True])
def test_unrolled_scans_compute_the_same_model(unroll, rolled):
    """unroll changes how the stacked steps are compiled, not what they compute: same
    parameters (the same draws), same log-likelihood, gradient and round trip; every
    scan (steps and residual blocks) gets the unroll."""
    x = data()
    models = [rolled[0], _unroll_model(unroll)]
    assert jax.tree.all(jax.tree.map(np.array_equal, nnx.state(models[0]), nnx.state(models[1])))

    values = [rolled[1], nnx.jit(nnx.value_and_grad(_unroll_loss))(models[1], x)]
    np.testing.assert_allclose(values[1][0], values[0][0], rtol=1e-6)
    for g1, g0 in zip(jax.tree.leaves(values[1][1]), jax.tree.leaves(values[0][1]), strict=True):
        np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-6)
    latents, _ = encode(models[1], x)
    x_back, _ = decode(models[1], latents)
    assert float(jnp.linalg.norm(x_back - x) / jnp.linalg.norm(x)) <= 1e-4

    def scans(model) -> list[tuple[int, int]]:
        """(length, unroll) of every scan in the traced log-likelihood.

        The loops inside jexpm's GPU kernels (``pallas_call``) are not the model's.
        """
        graphdef, state = nnx.split(model)
        jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s).log_prob(x))(state, x)
        found = []

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "pallas_call":
                    continue
                if eqn.primitive.name == "scan":
                    found.append((eqn.params["length"], int(eqn.params["unroll"])))
                for value in eqn.params.values():
                    for sub in value if isinstance(value, (tuple, list)) else (value,):
                        if isinstance(sub, jax_core.ClosedJaxpr):
                            walk(sub.jaxpr)
                        elif isinstance(sub, jax_core.Jaxpr):
                            walk(sub)

        walk(jaxpr.jaxpr)
        return found

    # The level's residual blocks (2) and steps (3: with unroll=2, one iteration of two
    # and a remainder of one).
    assert sorted(scans(models[0])) == [(2, 1), (3, 1)]
    expected = [(n, n if unroll is True else unroll) for n in (2, 3)]
    assert sorted(scans(models[1])) == sorted(expected)
