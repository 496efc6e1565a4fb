"""Coupling layers and their network, in one registry from name to class.

A coupling splits the channels x = (x1, x2), passes x1 through, and transforms x2
with parameters computed from x1 by a convolutional network (:class:`ConvNet`).
:data:`COUPLINGS` maps the names a model or config uses to the classes; every class
is built from the model's :class:`flows.GlowOptions` as they are.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from . import _backend, _matexp, _statistics
from ._bijector import Bijector, check_image, scan, stack, sum_per_member
from ._options import GlowOptions, copies_per_iteration


class ResidualBlock(nnx.Module):
    """x -> elu(x + conv3x3(elu(conv1x1(elu(conv3x3(x))))))."""

    def __init__(self, channels: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = {"padding": "SAME", "param_dtype": param_dtype, "rngs": rngs}
        self.conv1 = _backend.conv(channels, channels, (3, 3), **kw)
        self.conv2 = _backend.conv(channels, channels, (1, 1), **kw)
        self.conv3 = _backend.conv(channels, channels, (3, 3), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = _backend.elu(self.conv1(x))
        h = _backend.elu(self.conv2(h))
        return _backend.elu(x + self.conv3(h))


@_backend.recomputed
def _normalized(norm: nnx.LayerNorm, x: jax.Array) -> jax.Array:
    """``norm(x)``, recomputed in the backward pass (:func:`flows._backend.recomputed`)."""
    return norm(x)


class ConvNet(nnx.Module):
    """The coupling network: 3x3 conv + LayerNorm + ELU, residual blocks, zero 3x3 conv.

    The output convolution starts at zero, so every coupling starts as the identity.
    The residual blocks' parameters are stacked and the blocks run under one
    ``nnx.scan``, so compile time does not grow with their number.

    Args:
      in_channels: input channels.
      out_channels: output channels.
      options: the model's options; the network uses ``hidden_channels``,
        ``residual_blocks``, ``param_dtype`` and ``scan_unroll``.
      rngs: random streams for the convolution kernels.
    """

    def __init__(self, in_channels: int, out_channels: int, options: GlowOptions, *, rngs):
        width, blocks, dtype = options.hidden_channels, options.residual_blocks, options.param_dtype
        self.unroll = copies_per_iteration(options.scan_unroll, blocks)
        conv = {"padding": "SAME", "param_dtype": dtype, "rngs": rngs}
        self.conv_in = _backend.conv(in_channels, width, (3, 3), **conv)
        self.norm = nnx.LayerNorm(width, param_dtype=dtype, rngs=rngs)
        self.blocks = (
            stack(blocks, lambda rngs: ResidualBlock(width, param_dtype=dtype, rngs=rngs), rngs)
            if blocks
            else None
        )
        zeros = nnx.initializers.zeros_init()
        self.conv_out = _backend.conv(
            width, out_channels, (3, 3), kernel_init=zeros, bias_init=zeros, **conv
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = _backend.elu(_normalized(self.norm, self.conv_in(x)))
        if self.blocks is not None:
            h = scan(lambda h, block: block(h), h, self.blocks, unroll=self.unroll)
        return self.conv_out(h)


class Coupling(Bijector):
    """Shared frame: x = (x1, x2) split on channels, x1 passes, x2 is transformed by net(x1).

    Subclasses set ``outputs_per_channel`` (network outputs per transformed channel)
    and implement ``_transform``.
    """

    outputs_per_channel = 1

    def __init__(
        self,
        channels: int,
        options: GlowOptions | None = None,
        *,
        rngs: nnx.Rngs,
        extra_outputs: int = 0,
    ):
        if channels < 2:
            raise ValueError(f"{self.name}: needs at least 2 channels, got {channels}")
        options = options or GlowOptions()
        self.channels = channels
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        out = self.c2 * self.outputs_per_channel + extra_outputs
        self.net = ConvNet(self.c1, out, options, rngs=rngs)

    def check_forward(self, x) -> None:
        """Images of the layer's channel count."""
        check_image(x, self.name, self.channels)

    def _split(self, x):
        return x[..., : self.c1], x[..., self.c1 :]

    def _forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: y2 = f(x2; net(x1)), y1 = x1."""
        x1, x2 = self._split(x)
        y2, log_det = self._transform(x2, self.net(x1), inverse=False)
        return jnp.concatenate([x1, y2], axis=-1), log_det

    def _inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: x2 = f^{-1}(y2; net(y1)), x1 = y1."""
        y1, y2 = self._split(y)
        x2, log_det = self._transform(y2, self.net(y1), inverse=True)
        return jnp.concatenate([y1, x2], axis=-1), log_det

    @abc.abstractmethod
    def _transform(self, x2, h, *, inverse: bool) -> tuple[jax.Array, jax.Array]:
        """x2 -> (y2, log-det) given the network output h (and back with ``inverse``)."""


class AdditiveCoupling(Coupling):
    r"""Additive coupling (NICE): :math:`y_2 = x_2 + b(x_1)`, log-det 0.

    Args:
      channels: input channels; the first ``channels // 2`` condition the rest.
      options: the model's options; the network's (see :class:`ConvNet`).
      rngs: random streams for the network.
    """

    def _transform(self, x2, h, *, inverse):
        out = x2 - h if inverse else x2 + h
        return out, jnp.zeros(x2.shape[:1], x2.dtype)


class AffineCoupling(Coupling):
    r"""Affine coupling (Real NVP, Glow): :math:`y_2 = s \odot x_2 + b`, s = 2 sigmoid(raw).

    The scale lies in (0, 2) and is exactly 1 at initialisation (Glow uses
    sigmoid(raw + 2), which starts at 0.88), so the layer starts as the identity.

    Args:
      channels: input channels; the first ``channels // 2`` condition the rest.
      options: the model's options; the network's (see :class:`ConvNet`).
      rngs: random streams for the network.
    """

    outputs_per_channel = 2

    def _transform(self, x2, h, *, inverse):
        b, raw = h[..., : self.c2], h[..., self.c2 :]
        log_s = math.log(2.0) + jax.nn.log_sigmoid(raw)
        if inverse:
            return (x2 - b) * jnp.exp(-log_s), -sum_per_member(log_s)
        return x2 * jnp.exp(log_s) + b, sum_per_member(log_s)


#: Full matrix-exp couplings on at least this many transformed channels apply
#: :func:`jexpm.expm_multiply` by default. Measured on a 2-core AMD EPYC CPU (float32,
#: one vector per matrix, the CIFAR-10 Glow's batches of coupling matrices at
#: norms 0.5 and 2; value and gradient): forming e^S and multiplying took 0.32-0.57x
#: the action's time at c2 = 6, but 1.3-1.9x at 12, 1.2-2.7x at 24 and 2.1-7.2x at 48.
ACTION_MIN_CHANNELS = 12


class MatrixExpCoupling(Coupling):
    r"""Matrix-exponential coupling: :math:`y_2 = e^{S(x_1)} x_2 + b(x_1)` at every pixel.

    The network on :math:`x_1` outputs the shift b and, per pixel and per sample, a
    :math:`c_2 \times c_2` matrix

    .. math::  S = \rho \tanh(\alpha \odot R + \beta) + \sigma,

    with R the raw network output and learnable entry-wise :math:`\alpha` (init 1/8),
    :math:`\beta` (init 0), :math:`\rho` (init :math:`1/c_2`), :math:`\sigma` (init 0);
    the log-determinant is :math:`\sum_{hw} \mathrm{tr}\, S_{hw}` and the inverse is
    :math:`x_2 = e^{-S}(y_2 - b)` (Xiao & Liu 2020, section 4.2).

    In the low-rank form :math:`S = UV` with U (c2, rank), V (rank, c2), each squashed
    like S (:math:`\rho` init :math:`1/\sqrt{c_2}`), and :math:`e^{UV}` is computed by
    :func:`jexpm.expm_lowrank` from a rank x rank exponential. U's offset
    :math:`\sigma_U` starts at a fixed random matrix instead of 0, so that S = 0 at
    initialisation without U = V = 0, a saddle where neither factor receives a
    gradient.

    Each pixel needs only :math:`e^{S} x_2`, one vector per matrix. With ``action``
    the layer computes that without forming :math:`e^{S}`: by
    :func:`jexpm.expm_multiply` (Al-Mohy & Higham's truncated Taylor action), and in
    the low-rank form as :math:`x_2 + U \varphi_1(VU) V x_2`, with only rank x rank
    matrices. Under ``nnx.capture`` the layer records its exponentials' (m, s) as
    ``"expm_coupling"``, or for the full action its (m, steps) as
    ``"expm_coupling_action"`` (:func:`flows.expm_statistics`).

    Args:
      channels: input channels; the first ``channels // 2`` condition the other
        :math:`c_2` = ``channels - channels // 2``.
      options: the model's options; besides the network's, ``low_rank`` (``None``: low
        rank exactly when :math:`c_2 > 24`, as in the paper), ``rank``,
        ``coupling_action`` (``None``: always in the low-rank form, and for full S when
        :math:`c_2` >= ``ACTION_MIN_CHANNELS``), ``expm_method`` and ``expm_tol``.
      rngs: random streams for the network and the low-rank offset.
    """

    def __init__(self, channels: int, options: GlowOptions | None = None, *, rngs: nnx.Rngs):
        options = options or GlowOptions()
        c2 = channels - channels // 2
        self.low_rank = c2 > 24 if options.low_rank is None else bool(options.low_rank)
        action = options.coupling_action
        self.action = bool(self.low_rank or c2 >= ACTION_MIN_CHANNELS if action is None else action)
        rank = options.rank
        if self.low_rank and rank > c2:
            raise ValueError(f"{self.name}: rank must be in [1, {c2}], got {rank!r}")
        self.rank = rank
        self.expm_method, self.expm_tol = options.expm_method, options.expm_tol
        n_raw = 2 * rank * c2 if self.low_rank else c2 * c2
        super().__init__(channels, options, rngs=rngs, extra_outputs=n_raw)
        dtype = options.param_dtype
        rho = 1.0 / math.sqrt(c2) if self.low_rank else 1.0 / c2
        self.alpha = nnx.Param(jnp.full((n_raw,), 1.0 / 8, dtype))
        self.beta = nnx.Param(jnp.zeros((n_raw,), dtype))
        self.rho = nnx.Param(jnp.full((n_raw,), rho, dtype))
        sigma = jnp.zeros((n_raw,), dtype)
        if self.low_rank:
            u0 = jax.random.normal(rngs.params(), (rank * c2,), dtype) / math.sqrt(c2)
            sigma = sigma.at[: rank * c2].set(u0)
        self.sigma = nnx.Param(sigma)

    @_backend.recomputed
    def generator(self, raw: jax.Array):
        """S, or its factors (U, V) in the low-rank form, from the raw network output."""
        s = self.rho[...] * jnp.tanh(self.alpha[...] * raw + self.beta[...]) + self.sigma[...]
        c2 = self.c2
        if self.low_rank:
            n = self.rank * c2
            u = s[..., :n].reshape(*s.shape[:-1], c2, self.rank)
            v = s[..., n:].reshape(*s.shape[:-1], self.rank, c2)
            return u, v
        return s.reshape(*s.shape[:-1], c2, c2)

    def _transform(self, x2, h, *, inverse):
        b, raw = h[..., : self.c2], h[..., self.c2 :]
        sign = -1.0 if inverse else 1.0
        kw = {"method": self.expm_method, "tol": self.expm_tol}
        x = x2 - b if inverse else x2
        generator = self.generator(raw)
        name = "expm_coupling"
        if isinstance(generator, tuple):  # the low-rank form's factors
            u, v = generator
            trace = jnp.sum(u * jnp.swapaxes(v, -1, -2), axis=(-2, -1))
            if self.action:
                y, info = _matexp.expm_lowrank_multiply(sign * u, v, x, **kw)
            else:
                e, info = _matexp.expm_lowrank(sign * u, v, **kw)
                y = _apply(e, x)
        else:
            s = generator
            # Not jnp.trace: its gradient keeps a mask and zeros the size of s.
            trace = jnp.diagonal(s, axis1=-2, axis2=-1).sum(-1)
            if self.action:
                y, info = _matexp.expm_multiply(sign * s, x, **kw)
                name = "expm_coupling_action"
            else:
                e, info = _matexp.expm(sign * s, **kw)
                y = _apply(e, x)
        _statistics.record(self, name, info)
        log_det = sign * sum_per_member(trace)
        return (y if inverse else y + b), log_det


def _apply(e: jax.Array, x: jax.Array) -> jax.Array:
    """Each matrix of e times its vector of x."""
    return jnp.einsum("...ij,...j->...i", e, x)


#: Coupling name -> class; every class is built by ``cls(channels, options, rngs=rngs)``.
COUPLINGS: Mapping[str, type[Coupling]] = {
    "matrix_exp": MatrixExpCoupling,
    "affine": AffineCoupling,
    "additive": AdditiveCoupling,
}
