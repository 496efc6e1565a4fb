"""The multi-scale reshaping: space to depth (squeeze) and factoring out a latent (split)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from . import _backend
from ._bijector import Bijector, check_image, sum_per_member


def squeeze(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, 4C): every 2x2 block of pixels becomes one pixel."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(y: jax.Array) -> jax.Array:
    """Inverse of ``squeeze``: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
    b, h, w, c4 = y.shape
    y = y.reshape(b, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, c4 // 4)


class Squeeze(Bijector):
    """Space-to-depth as a bijector (log-det 0); see ``squeeze``."""

    def check_forward(self, x) -> None:
        """Images of even height and width."""
        check_image(x, self.name)
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(
                f"{self.name}: height and width must be even, got input of shape {x.shape}"
            )

    def check_inverse(self, y) -> None:
        """Images whose channels are a multiple of 4."""
        check_image(y, self.name)
        if y.shape[-1] % 4:
            raise ValueError(f"{self.name}: channels must be a multiple of 4, got shape {y.shape}")

    def _forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: (B, H, W, C) -> (B, H/2, W/2, 4C)."""
        return squeeze(x), jnp.zeros(x.shape[:1], x.dtype)

    def _inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
        return unsqueeze(y), jnp.zeros(y.shape[:1], y.dtype)


class Split(Bijector):
    r"""Factor out half the channels under a learned conditional Gaussian (Glow's split).

    x = (z1, z2) on channels; a zero-initialised 3x3 convolution of z1 gives the
    mean :math:`\mu` and log-scale :math:`\lambda` of z2, and z2 leaves standardised:

    .. math::  \varepsilon = (z_2 - \mu(z_1))\, e^{-\lambda(z_1)}, \qquad
               \log|\det| = -\textstyle\sum \lambda,

    so ``forward_and_log_det(x)`` returns ``((z1, eps), log_det)`` with eps a
    standard-normal latent, and ``inverse_and_log_det((z1, eps))`` rebuilds x.

    Args:
      channels: input channels; z1 keeps ``channels // 2``.
      param_dtype: dtype of the parameters (default float32).
      rngs: unused (zero initialisation); kept for the Flax convention.
    """

    factors = 1

    def __init__(self, channels: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if channels < 2:
            raise ValueError(f"{self.name}: needs at least 2 channels, got {channels}")
        self.channels = channels
        self.kept = channels // 2
        zeros = nnx.initializers.zeros_init()
        self.prior = _backend.conv(
            self.kept,
            2 * (channels - self.kept),
            (3, 3),
            padding="SAME",
            kernel_init=zeros,
            bias_init=zeros,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def _prior(self, z1):
        h = self.prior(z1)
        c = self.channels - self.kept
        return h[..., :c], h[..., c:]

    def check_forward(self, x) -> None:
        """Images of the layer's channel count."""
        check_image(x, self.name, self.channels)

    def check_inverse(self, y) -> None:
        """(z1, eps) of the kept and factored-out channel counts, of one height x width."""
        z1, eps = y
        check_image(z1, self.name, self.kept)
        check_image(eps, self.name, self.channels - self.kept, z1.shape[1:3])

    def _forward_and_log_det(self, x: jax.Array):
        """Data to latent: x -> ((z1, eps), log_det)."""
        z1, z2 = x[..., : self.kept], x[..., self.kept :]
        mean, log_scale = self._prior(z1)
        return (z1, (z2 - mean) * jnp.exp(-log_scale)), -sum_per_member(log_scale)

    def _inverse_and_log_det(self, y):
        """Latent to data: (z1, eps) -> (x, log_det)."""
        z1, eps = y
        mean, log_scale = self._prior(z1)
        z2 = mean + eps * jnp.exp(log_scale)
        return jnp.concatenate([z1, z2], axis=-1), sum_per_member(log_scale)
