"""Invariants every flow layer must satisfy, run over one registry of constructors."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flows
from flows import _backend
from tests.helpers import enable_x64

SHAPE = (3, 4, 4, 6)  # (batch, height, width, channels)
SMALL = dict(hidden_channels=8, residual_blocks=1)


@dataclasses.dataclass(frozen=True)
class Entry:
    build: Callable  # (rngs, param_dtype) -> layer
    identity_at_init: bool = True
    core: bool = True  # False: a method variant, checked for invertibility only


def options(**kw):
    return flows.GlowOptions(**{**SMALL, **kw})


def _coupling(cls, **kw):
    return lambda rngs, pd: cls(SHAPE[-1], options(param_dtype=pd, **kw), rngs=rngs)


def _from_registry(name: str, **kw):
    """A coupling of flows.COUPLINGS, built the way a model builds it."""

    def build(rngs, pd):
        return flows.COUPLINGS[name](SHAPE[-1], options(param_dtype=pd, **kw), rngs=rngs)

    return build


REGISTRY = {
    "actnorm": Entry(lambda rngs, pd: flows.ActNorm(*SHAPE[1:], param_dtype=pd, rngs=rngs)),
    "squeeze": Entry(lambda rngs, pd: flows.Squeeze(), identity_at_init=False),
    "split": Entry(lambda rngs, pd: flows.Split(SHAPE[-1], param_dtype=pd, rngs=rngs)),
    **{name: Entry(_from_registry(name, low_rank=False)) for name in flows.COUPLINGS},
    "matrix_exp_action": Entry(_from_registry("matrix_exp", low_rank=False, coupling_action=True)),
    "matrix_exp_low_rank": Entry(_from_registry("matrix_exp", low_rank=True, rank=2)),
    "matrix_exp_low_rank_formed": Entry(
        _from_registry("matrix_exp", low_rank=True, rank=2, coupling_action=False)
    ),
    "matrix_exp_1x1": Entry(
        lambda rngs, pd: flows.MatrixExp1x1Conv(SHAPE[-1], options(param_dtype=pd), rngs=rngs),
        identity_at_init=False,
    ),
    "flow_step": Entry(
        lambda rngs, pd: flows.FlowStep(SHAPE[1:], options(param_dtype=pd), rngs=rngs),
        identity_at_init=False,
    ),
    "level": Entry(
        lambda rngs, pd: flows.Level(
            SHAPE[1:],
            2,
            split=True,
            options=options(param_dtype=pd),
            rngs=rngs,
        ),
        identity_at_init=False,
    ),
    "chain": Entry(
        lambda rngs, pd: flows.Chain(
            actnorm=flows.ActNorm(*SHAPE[1:], param_dtype=pd, rngs=rngs),
            coupling=_coupling(flows.AffineCoupling)(rngs, pd),
        )
    ),
}
# Every exact exponential method through both matrix-exp layers.
for _method in ("ps", "baseline", "jax.scipy"):
    REGISTRY[f"matrix_exp[{_method}]"] = Entry(
        _coupling(flows.MatrixExpCoupling, low_rank=False, expm_method=_method), core=False
    )
    REGISTRY[f"matrix_exp_low_rank[{_method}]"] = Entry(
        _coupling(flows.MatrixExpCoupling, low_rank=True, rank=2, expm_method=_method), core=False
    )
    REGISTRY[f"matrix_exp_1x1[{_method}]"] = Entry(
        lambda rngs, pd, m=_method: flows.MatrixExp1x1Conv(
            SHAPE[-1], options(expm_method=m, param_dtype=pd), rngs=rngs
        ),
        identity_at_init=False,
        core=False,
    )
NAMES = sorted(REGISTRY)
CORE = [n for n in NAMES if REGISTRY[n].core]


@nnx.jit
def forward(layer, x):
    return layer.forward_and_log_det(x)


@nnx.jit
def inverse(layer, y):
    return layer.inverse_and_log_det(y)


def perturbed(name: str, seed: int = 0, param_dtype=jnp.float32, scale: float = 0.3):
    """The layer with every parameter moved off its initial value, so nothing is trivial."""
    layer = REGISTRY[name].build(nnx.Rngs(seed), param_dtype)
    params = nnx.state(layer, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves) + 1)
    noisy = [
        p + scale * _backend.normal(k, p.shape, p.dtype) / np.sqrt(max(p.shape[-1], 1))
        for p, k in zip(leaves, keys[:-1], strict=True)
    ]
    nnx.update(layer, jax.tree.unflatten(treedef, noisy))
    return layer


def inputs(seed: int = 1, shape=SHAPE, dtype=jnp.float32):
    return _backend.normal(jax.random.key(seed), shape, dtype)


def flat(tree) -> jax.Array:
    """Concatenate a layer output (array or tuple of arrays) per batch member."""
    leaves = jax.tree.leaves(tree)
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=-1)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name):
    layer = perturbed(name)
    x = inputs()
    y, _ = forward(layer, x)
    x_back, _ = inverse(layer, y)
    assert float(jnp.linalg.norm(x_back - x) / jnp.linalg.norm(x)) <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_inverse_log_det_is_minus_forward(name):
    layer = perturbed(name)
    y, ld_fwd = forward(layer, inputs())
    _, ld_inv = inverse(layer, y)
    assert ld_fwd.shape == ld_inv.shape == (SHAPE[0],)
    np.testing.assert_allclose(ld_inv, -ld_fwd, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CORE)
def test_log_det_matches_jacobian(name):
    """log|det| against slogdet of the full Jacobian on one tiny input, in float64."""
    with enable_x64():
        layer = perturbed(name, param_dtype=jnp.float64)
        x = inputs(shape=(1, *SHAPE[1:]), dtype=jnp.float64)

        def f(v):
            return flat(layer.forward_and_log_det(v.reshape(x.shape))[0])[0]

        jac = jax.jit(jax.jacrev(f))(x.reshape(-1))
        sign, logabs = jnp.linalg.slogdet(jac)
        _, log_det = forward(layer, x)
        assert float(sign) != 0.0
        np.testing.assert_allclose(float(log_det[0]), float(logabs), rtol=1e-9, atol=1e-9)
        if name not in ("squeeze", "additive"):  # the two volume-preserving layers
            assert abs(float(logabs)) > 1e-3  # the perturbation made the layer non-trivial


@pytest.mark.parametrize("name", [n for n in CORE if REGISTRY[n].identity_at_init])
def test_identity_at_initialisation(name):
    layer = REGISTRY[name].build(nnx.Rngs(0), jnp.float32)
    x = inputs()
    y, log_det = forward(layer, x)
    # Split returns (z1, eps): at initialisation eps is z2 itself.
    expected = (x[..., :3], x[..., 3:]) if name == "split" else x
    np.testing.assert_allclose(flat(y), flat(expected), atol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)


@pytest.mark.parametrize("method", ["opt15", "ps", "baseline", "jax.scipy"])
def test_1x1_conv_starts_as_a_random_rotation(method):
    layer = flows.MatrixExp1x1Conv(12, options(expm_method=method), rngs=nnx.Rngs(3))
    w = layer.weight[...]
    np.testing.assert_allclose(w, -w.T, atol=1e-7)
    x = inputs(shape=(2, 4, 4, 12))
    y, log_det = forward(layer, x)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)
    # a rotation keeps every pixel's norm, and is not the identity
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    assert float(jnp.max(jnp.abs(y - x))) > 0.1


@pytest.mark.parametrize("n", [2, 3, 8, 12, 48])
def test_random_rotation_log_is_the_log_of_a_haar_rotation(n):
    key = jax.random.key(n)
    w = flows.random_rotation_log(key, n)
    q = jax.scipy.linalg.expm(w.astype(jnp.float32))
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=2e-5)
    assert float(jnp.linalg.det(q)) == pytest.approx(1.0, abs=1e-4)
    # the principal log: every rotation angle within (-pi, pi]
    assert float(jnp.max(jnp.abs(jnp.linalg.eigvals(w).imag))) <= np.pi + 1e-5
    # and exp(W) is the Haar draw itself (same QR construction, independently here)
    g = jax.random.normal(key, (n, n), jnp.float32)
    q0, r0 = np.linalg.qr(np.asarray(g, np.float64))
    q0 = q0 * np.sign(np.diag(r0))
    q0[:, 0] *= np.sign(np.linalg.det(q0))
    np.testing.assert_allclose(q, q0, atol=5e-4)


@pytest.mark.parametrize("name", CORE)
def test_gradients_finite_and_nonzero(name):
    layer = perturbed(name)
    x = inputs()
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def loss(p):
        y, log_det = nnx.merge(graphdef, p, rest).forward_and_log_det(x)
        return jnp.sum(flat(y) ** 2) - jnp.sum(log_det)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    if name == "squeeze":
        assert leaves == []
        return
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


@pytest.mark.parametrize("name", CORE)
def test_batch_members_are_independent(name):
    layer = perturbed(name)
    x = inputs()
    y, log_det = forward(layer, x)
    assert flat(y).shape == (SHAPE[0], np.prod(SHAPE[1:]))
    assert log_det.shape == (SHAPE[0],)
    for i in range(SHAPE[0]):
        yi, ldi = forward(layer, x[i : i + 1])
        np.testing.assert_allclose(flat(yi)[0], flat(y)[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ldi[0], log_det[i], rtol=1e-5, atol=1e-5)


def test_actnorm_data_dependent_initialisation():
    layer = flows.ActNorm(4, 4, 3, rngs=nnx.Rngs(0))
    x = 3.0 + 2.0 * inputs(shape=(256, 4, 4, 3))
    layer.initialize(x)
    y, log_det = layer.forward_and_log_det(x)
    np.testing.assert_allclose(jnp.mean(y, axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.std(y, axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(log_det, -jnp.sum(jnp.log(jnp.std(x, axis=0))), rtol=1e-4)


@pytest.mark.parametrize("c2, expected", [(6, False), (24, False), (25, True), (48, True)])
def test_low_rank_is_chosen_above_24_channels(c2, expected):
    layer = flows.MatrixExpCoupling(
        2 * c2, options(hidden_channels=4, residual_blocks=0), rngs=nnx.Rngs(0)
    )
    assert layer.low_rank is expected
    n_raw = 2 * 3 * c2 if expected else c2 * c2
    assert layer.alpha.shape == (n_raw,)


def test_coupling_squash_initial_values():
    layer = flows.MatrixExpCoupling(12, options(), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(layer.alpha[...], 1 / 8)
    np.testing.assert_allclose(layer.beta[...], 0.0)
    np.testing.assert_allclose(layer.rho[...], 1 / 6)
    np.testing.assert_allclose(layer.sigma[...], 0.0)


def test_low_rank_coupling_learns_from_its_initial_point():
    """S = UV = 0 at initialisation, yet both factors get a gradient (no saddle)."""
    layer = flows.MatrixExpCoupling(12, options(low_rank=True, rank=3), rngs=nnx.Rngs(0))
    x = inputs(shape=(2, 4, 4, 12))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def loss(p):
        y, _ = nnx.merge(graphdef, p, rest).forward_and_log_det(x)
        return jnp.sum(y[..., 6:] * x[..., 6:] ** 2)

    g = jax.grad(loss)(params)
    assert float(jnp.max(jnp.abs(g["net"]["conv_out"]["kernel"][...]))) > 0


def _i_plus_a(a, tol):
    return jnp.eye(a.shape[-1], dtype=a.dtype) + a


def test_a_registered_exponential_is_used_by_the_layers(monkeypatch):
    monkeypatch.setattr(flows._matexp, "_REGISTRY", dict(flows._matexp._REGISTRY))
    with pytest.raises(ValueError, match="unknown expm method 'I plus A'"):
        flows.GlowOptions(expm_method="I plus A")
    flows.register_exponential("I plus A", _i_plus_a)
    layer = flows.MatrixExp1x1Conv(6, options(expm_method="I plus A"), rngs=nnx.Rngs(0))
    x = inputs()
    y, _ = layer.forward_and_log_det(x)
    m = jnp.eye(6) + layer.weight[...]
    np.testing.assert_allclose(y, jnp.einsum("bhwc,dc->bhwd", x, m), rtol=1e-6, atol=1e-6)
    # the low-rank default is the dense exponential of u @ v
    u, v = jnp.ones((5, 2)), jnp.full((2, 5), 0.5)
    value, info = flows._matexp.expm_lowrank(u, v, method="I plus A", tol=None)
    np.testing.assert_allclose(value, jnp.eye(5) + u @ v)
    assert info is None  # a registered exponential reports no (m, s)
    with pytest.raises(ValueError, match="registered already"):
        flows.register_exponential("I plus A", _i_plus_a)
    with pytest.raises(ValueError, match="registered already"):
        flows.register_exponential("opt15", _i_plus_a, replace=True)
    # the training configs take only the built-in methods, which the Literal type names
    assert typing.get_args(flows._matexp.Method) == flows.EXPM_METHODS
    from flows import configs

    with pytest.raises(ValueError, match="unknown expm_method 'I plus A'"):
        configs.override(configs.get_config("test"), ["expm_method=I plus A"])


@pytest.mark.parametrize("name", ["actnorm", "split", "affine", "matrix_exp_1x1"])
def test_wrong_rank_raises(name):
    layer = REGISTRY[name].build(nnx.Rngs(0), jnp.float32)
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\).*\(4, 4, 6\)"):
        layer.forward_and_log_det(jnp.zeros((4, 4, 6)))


@pytest.mark.parametrize("name", ["actnorm", "split", "additive", "matrix_exp"])
def test_channel_mismatch_raises(name):
    layer = REGISTRY[name].build(nnx.Rngs(0), jnp.float32)
    with pytest.raises(ValueError, match=r"6 channels.*\(1, 4, 4, 5\)"):
        layer.forward_and_log_det(jnp.zeros((1, 4, 4, 5)))


def test_odd_spatial_size_for_squeeze_raises():
    with pytest.raises(ValueError, match=r"even.*\(1, 5, 4, 3\)"):
        flows.Squeeze().forward_and_log_det(jnp.zeros((1, 5, 4, 3)))


def test_bad_layer_options_raise():
    with pytest.raises(ValueError, match="unknown expm method 'pade'"):
        flows.GlowOptions(expm_method="pade")
    # The same tolerance rule as jexpm itself: 0 < tol < 1, checked at construction.
    for tol in (0.0, 2.0):
        with pytest.raises(ValueError, match=r"tol must satisfy 0 < tol < 1"):
            flows.GlowOptions(expm_tol=tol)
    with pytest.raises(ValueError, match=r"tol must satisfy 0 < tol < 1"):
        flows.GlowOptions(expm_tol=2.0)
    with pytest.raises(ValueError, match="rank must be in"):
        flows.MatrixExpCoupling(8, options(low_rank=True, rank=5), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="at least 2 channels"):
        flows.AffineCoupling(1, rngs=nnx.Rngs(0))
