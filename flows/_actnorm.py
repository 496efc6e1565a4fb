"""Activation normalisation with data-dependent initialisation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ._bijector import Bijector, check_image, constant_log_det


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class ActNorm(Bijector):
    r"""Activation normalisation with a scale and shift for every (height, width, channel).

    .. math::  y = (x + b) \odot \mathrm{softplus}(r), \qquad
               \log|\det| = \textstyle\sum_{h,w,c} \log \mathrm{softplus}(r_{hwc}).

    The layer is the identity until initialised from data: in its ``initializing``
    mode (which :meth:`flows.Bijector.initialize` of this layer or of any chain holding
    it turns on for one forward pass) a forward pass first sets b and r so that its
    batch leaves with zero mean and unit variance at every position (Kingma &
    Dhariwal's data-dependent initialisation, per position as in Xiao & Liu 2020).

    Args:
      height: input height.
      width: input width.
      channels: input channels.
      param_dtype: dtype of the parameters (default float32).
      rngs: unused (the initialisation is deterministic); kept for the Flax convention.
    """

    def __init__(self, height: int, width: int, channels: int, *, param_dtype=jnp.float32, rngs):
        del rngs
        shape = (height, width, channels)
        self.shape = shape
        self.initializing = False
        self.shift = nnx.Param(jnp.zeros(shape, param_dtype))
        self.raw_scale = nnx.Param(jnp.full(shape, _softplus_inverse(1.0), param_dtype))

    def check_forward(self, x) -> None:
        """Images of the (height, width, channels) the layer was built for."""
        check_image(x, self.name, self.shape[2], self.shape[:2])

    def _scale(self) -> jax.Array:
        return jax.nn.softplus(self.raw_scale[...])

    def _initialize(self, x: jax.Array, eps: float = 1e-6) -> None:
        """Set shift and scale so that this batch leaves with zero mean, unit variance."""
        mean = jnp.mean(x, axis=0)
        std = jnp.sqrt(jnp.var(x, axis=0) + eps)
        self.shift[...] = (-mean).astype(self.shift.dtype)
        scale = 1.0 / std
        # softplus^{-1}(s) = s + log(1 - exp(-s)), written stably for all s > 0.
        self.raw_scale[...] = (scale + jnp.log(-jnp.expm1(-scale))).astype(self.raw_scale.dtype)

    def _forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: (x + b) * scale (after setting b and r, when initializing)."""
        if self.initializing:
            self._initialize(x)
        scale = self._scale()
        return (x + self.shift[...]) * scale, constant_log_det(jnp.sum(jnp.log(scale)), x)

    def _inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: y / scale - b."""
        scale = self._scale()
        return y / scale - self.shift[...], constant_log_det(-jnp.sum(jnp.log(scale)), y)
