"""Invertible 1x1 convolutions whose weight is a matrix exponential."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from . import _backend, _matexp, _statistics
from ._bijector import Bijector, check_image, constant_log_det
from ._options import GlowOptions


def random_rotation_log(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    r"""Real logarithm of a Haar-random special orthogonal n x n matrix.

    Q is drawn from the Haar measure (QR of a Gaussian matrix with the signs of
    R's diagonal fixed; Mezzadri 2007) and its first column negated if
    :math:`\det Q = -1`. Q is normal, so its symmetric part
    :math:`C = (Q + Q^T)/2` and skew part :math:`K = (Q - Q^T)/2` commute and act on
    each invariant plane as :math:`\cos\theta\,I` and :math:`\sin\theta\,J`. With
    :math:`C = V \operatorname{diag}(c) V^T` and :math:`s_j = \|K v_j\|`, the
    principal logarithm is :math:`V \operatorname{diag}(\theta_j / s_j) V^T K`,
    :math:`\theta_j = \operatorname{atan2}(s_j, c_j)`: only ``eigh``, so it runs on
    every backend. The result is made exactly skew-symmetric, so
    :math:`e^W` is a rotation (det 1) whatever the rounding.
    """
    g = _backend.normal(key, (n, n), jnp.float32)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diag(r))
    q = q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))
    c, v = jnp.linalg.eigh((q + q.T) / 2)
    k = (q - q.T) / 2
    s = jnp.linalg.norm(k @ v, axis=0)
    theta = jnp.arctan2(s, jnp.clip(c, -1.0, 1.0))
    ratio = jnp.where(s > 1e-6, theta / jnp.where(s > 1e-6, s, 1.0), 1.0)
    w = (v * ratio) @ v.T @ k
    return ((w - w.T) / 2).astype(dtype)


class MatrixExp1x1Conv(Bijector):
    r"""Invertible 1x1 convolution whose weight is a matrix exponential.

    .. math::  y_{hw} = e^{W} x_{hw}, \qquad \log|\det| = \mathrm{tr}(W)\, H\, W_s,
               \qquad x_{hw} = e^{-W} y_{hw},

    so the log-determinant is free and the inverse is always defined (Xiao & Liu
    2020, eq. 9). W starts at the real logarithm of a random rotation
    (:func:`random_rotation_log`), so the layer starts as a random channel rotation
    with log-determinant 0. Under ``nnx.capture`` it records the exponential's
    (m, s) as ``"expm_conv"`` (:func:`flows.expm_statistics`).

    Args:
      channels: number of channels c; W is c x c.
      options: the model's options; the layer uses ``expm_method``, ``expm_tol`` and
        ``param_dtype`` (default: :class:`flows.GlowOptions`'s).
      rngs: random streams; ``rngs.params()`` draws the initial rotation.
    """

    def __init__(self, channels: int, options: GlowOptions | None = None, *, rngs: nnx.Rngs):
        options = options or GlowOptions()
        self.channels = channels
        self.options = options
        self.weight = nnx.Param(random_rotation_log(rngs.params(), channels, options.param_dtype))

    def check_forward(self, x) -> None:
        """Images of the layer's channel count."""
        check_image(x, self.name, self.channels)

    def _apply(self, x: jax.Array, sign: float) -> tuple[jax.Array, jax.Array]:
        w = sign * self.weight[...]
        m, info = _matexp.expm(w, method=self.options.expm_method, tol=self.options.expm_tol)
        _statistics.record(self, "expm_conv", info)
        log_det = jnp.trace(w) * x.shape[1] * x.shape[2]
        return jnp.einsum("bhwc,dc->bhwd", x, m), constant_log_det(log_det, x)

    def _forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: exp(W) x at every pixel."""
        return self._apply(x, 1.0)

    def _inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: exp(-W) y at every pixel."""
        return self._apply(y, -1.0)
