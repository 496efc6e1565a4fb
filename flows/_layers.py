"""Bijective layers of a Glow-style flow on images of shape (batch, height, width, channels).

Direction, once for all layers: ``forward_and_log_det`` maps data to latent,
``x -> (y, log|det dy/dx|)``, and ``inverse_and_log_det`` maps latent to data,
``y -> (x, log|det dx/dy|)``; log-dets are per batch member, shape (batch,). This is
the Glow paper's direction and Distrax's bijector contract.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from . import _matexp

COUPLINGS = ("matrix_exp", "affine", "additive")


def check_image(x: jax.Array, layer: str, channels: int | None = None, spatial=None) -> None:
    """Raise ``ValueError`` unless x is (batch, height, width, channels) as expected."""
    if x.ndim != 4:
        raise ValueError(
            f"{layer}: expected images of shape (batch, height, width, channels), "
            f"got shape {x.shape}"
        )
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{layer}: built for {channels} channels, got input of shape {x.shape} "
            f"({x.shape[-1]} channels)"
        )
    if spatial is not None and tuple(x.shape[1:3]) != tuple(spatial):
        raise ValueError(
            f"{layer}: built for height x width {tuple(spatial)}, got input of shape {x.shape}"
        )


def _sum_per_member(x: jax.Array) -> jax.Array:
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class ActNorm(nnx.Module):
    r"""Activation normalisation with a scale and shift for every (height, width, channel).

    .. math::  y = (x + b) \odot \mathrm{softplus}(r), \qquad
               \log|\det| = \textstyle\sum_{h,w,c} \log \mathrm{softplus}(r_{hwc}).

    The layer is the identity until :meth:`initialize` sets b and r from a batch so
    that the output has zero mean and unit variance at every position (Kingma &
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
        self.shift = nnx.Param(jnp.zeros(shape, param_dtype))
        self.raw_scale = nnx.Param(jnp.full(shape, _softplus_inverse(1.0), param_dtype))

    def _check(self, x):
        check_image(x, "ActNorm", self.shift.shape[-1], self.shift.shape[:2])

    def _scale(self) -> jax.Array:
        return jax.nn.softplus(self.raw_scale[...])

    def initialize(self, x: jax.Array, eps: float = 1e-6) -> None:
        """Set shift and scale so that this batch leaves with zero mean, unit variance."""
        self._check(x)
        mean = jnp.mean(x, axis=0)
        std = jnp.sqrt(jnp.var(x, axis=0) + eps)
        self.shift[...] = (-mean).astype(self.shift.dtype)
        scale = 1.0 / std
        # softplus^{-1}(s) = s + log(1 - exp(-s)), written stably for all s > 0.
        self.raw_scale[...] = (scale + jnp.log(-jnp.expm1(-scale))).astype(self.raw_scale.dtype)

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: (x + b) * scale."""
        self._check(x)
        scale = self._scale()
        log_det = jnp.sum(jnp.log(scale))
        return (x + self.shift[...]) * scale, jnp.broadcast_to(log_det, x.shape[:1])

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: y / scale - b."""
        self._check(y)
        scale = self._scale()
        log_det = -jnp.sum(jnp.log(scale))
        return y / scale - self.shift[...], jnp.broadcast_to(log_det, y.shape[:1])


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
    g = jax.random.normal(key, (n, n), jnp.float32)
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


class MatrixExp1x1Conv(nnx.Module):
    r"""Invertible 1x1 convolution whose weight is a matrix exponential.

    .. math::  y_{hw} = e^{W} x_{hw}, \qquad \log|\det| = \mathrm{tr}(W)\, H\, W_s,
               \qquad x_{hw} = e^{-W} y_{hw},

    so the log-determinant is free and the inverse is always defined (Xiao & Liu
    2020, eq. 9). W starts at the real logarithm of a random rotation
    (:func:`random_rotation_log`), so the layer starts as a random channel rotation
    with log-determinant 0.

    Args:
      channels: number of channels c; W is c x c.
      method: exponential method, one of ``flows.EXPM_METHODS`` (default "opt15") or a
        name registered with ``flows.register_exponential``.
      tol: tolerance for the jexpm methods (``None``: the dtype's unit roundoff).
      param_dtype: dtype of W (default float32).
      rngs: random streams; ``rngs.params()`` draws the initial rotation.
    """

    def __init__(
        self,
        channels: int,
        *,
        method: str = "opt15",
        tol: float | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _matexp.check_method(method, tol)
        self.method, self.tol = method, tol
        self.weight = nnx.Param(random_rotation_log(rngs.params(), channels, param_dtype))

    def _apply(self, x: jax.Array, sign: float) -> tuple[jax.Array, jax.Array]:
        check_image(x, "MatrixExp1x1Conv", self.weight.shape[0])
        w = sign * self.weight[...]
        m = _matexp.expm(w, method=self.method, tol=self.tol)
        log_det = jnp.trace(w) * x.shape[1] * x.shape[2]
        return jnp.einsum("bhwc,dc->bhwd", x, m), jnp.broadcast_to(log_det, x.shape[:1])

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: exp(W) x at every pixel."""
        return self._apply(x, 1.0)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: exp(-W) y at every pixel."""
        return self._apply(y, -1.0)


class ResidualBlock(nnx.Module):
    """x -> elu(x + conv3x3(elu(conv1x1(elu(conv3x3(x))))))."""

    def __init__(self, channels: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = {"padding": "SAME", "param_dtype": param_dtype, "rngs": rngs}
        self.conv1 = nnx.Conv(channels, channels, (3, 3), **kw)
        self.conv2 = nnx.Conv(channels, channels, (1, 1), **kw)
        self.conv3 = nnx.Conv(channels, channels, (3, 3), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.elu(self.conv1(x))
        h = jax.nn.elu(self.conv2(h))
        return jax.nn.elu(x + self.conv3(h))


class ConvNet(nnx.Module):
    """The coupling network: 3x3 conv + LayerNorm + ELU, residual blocks, zero 3x3 conv.

    The output convolution starts at zero, so every coupling starts as the identity.

    Args:
      in_channels: input channels.
      out_channels: output channels.
      hidden_channels: width of the hidden layers (default 128).
      residual_blocks: number of residual blocks (default 8).
      param_dtype: dtype of the parameters (default float32).
      rngs: random streams for the convolution kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden_channels: int = 128,
        residual_blocks: int = 8,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.conv_in = nnx.Conv(
            in_channels,
            hidden_channels,
            (3, 3),
            padding="SAME",
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.norm = nnx.LayerNorm(hidden_channels, param_dtype=param_dtype, rngs=rngs)
        self.blocks = nnx.List(
            [
                ResidualBlock(hidden_channels, param_dtype=param_dtype, rngs=rngs)
                for _ in range(residual_blocks)
            ]
        )
        zeros = nnx.initializers.zeros_init()
        self.conv_out = nnx.Conv(
            hidden_channels,
            out_channels,
            (3, 3),
            padding="SAME",
            kernel_init=zeros,
            bias_init=zeros,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.elu(self.norm(self.conv_in(x)))
        for block in self.blocks:
            h = block(h)
        return self.conv_out(h)


class _Coupling(nnx.Module):
    """Shared frame: x = (x1, x2) split on channels, x1 passes, x2 is transformed by net(x1)."""

    name = "coupling"
    outputs_per_channel = 1  # network outputs per transformed channel (shift, scale, ...)

    def __init__(
        self,
        channels: int,
        *,
        hidden_channels: int = 128,
        residual_blocks: int = 8,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        extra_outputs: int = 0,
    ):
        if channels < 2:
            raise ValueError(f"{self.name}: needs at least 2 channels, got {channels}")
        self.channels = channels
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        self.net = ConvNet(
            self.c1,
            self.c2 * self.outputs_per_channel + extra_outputs,
            hidden_channels=hidden_channels,
            residual_blocks=residual_blocks,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def _split(self, x):
        check_image(x, self.name, self.channels)
        return x[..., : self.c1], x[..., self.c1 :]

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: y2 = f(x2; net(x1)), y1 = x1."""
        x1, x2 = self._split(x)
        y2, log_det = self._transform(x2, self.net(x1), inverse=False)
        return jnp.concatenate([x1, y2], axis=-1), log_det

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: x2 = f^{-1}(y2; net(y1)), x1 = y1."""
        y1, y2 = self._split(y)
        x2, log_det = self._transform(y2, self.net(y1), inverse=True)
        return jnp.concatenate([y1, x2], axis=-1), log_det

    def _transform(self, x2, h, *, inverse: bool):
        raise NotImplementedError


class AdditiveCoupling(_Coupling):
    r"""Additive coupling (NICE): :math:`y_2 = x_2 + b(x_1)`, log-det 0.

    Args:
      channels: input channels; the first ``channels // 2`` condition the rest.
      hidden_channels: width of the coupling network (default 128).
      residual_blocks: residual blocks in the coupling network (default 8).
      param_dtype: dtype of the parameters (default float32).
      rngs: random streams for the network.
    """

    name = "AdditiveCoupling"

    def _transform(self, x2, h, *, inverse):
        out = x2 - h if inverse else x2 + h
        return out, jnp.zeros(x2.shape[:1], x2.dtype)


class AffineCoupling(_Coupling):
    r"""Affine coupling (Real NVP, Glow): :math:`y_2 = s \odot x_2 + b`, s = 2 sigmoid(raw).

    The scale lies in (0, 2) and is exactly 1 at initialisation (Glow uses
    sigmoid(raw + 2), which starts at 0.88), so the layer starts as the identity.

    Args:
      channels: input channels; the first ``channels // 2`` condition the rest.
      hidden_channels: width of the coupling network (default 128).
      residual_blocks: residual blocks in the coupling network (default 8).
      param_dtype: dtype of the parameters (default float32).
      rngs: random streams for the network.
    """

    name = "AffineCoupling"
    outputs_per_channel = 2

    def _transform(self, x2, h, *, inverse):
        b, raw = h[..., : self.c2], h[..., self.c2 :]
        log_s = math.log(2.0) + jax.nn.log_sigmoid(raw)
        if inverse:
            return (x2 - b) * jnp.exp(-log_s), -_sum_per_member(log_s)
        return x2 * jnp.exp(log_s) + b, _sum_per_member(log_s)


class MatrixExpCoupling(_Coupling):
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

    Args:
      channels: input channels; the first ``channels // 2`` condition the other
        :math:`c_2` = ``channels - channels // 2``.
      hidden_channels: width of the coupling network (default 128).
      residual_blocks: residual blocks in the coupling network (default 8).
      low_rank: ``True`` for the low-rank form, ``False`` for full S, ``None``
        (default) for low-rank exactly when :math:`c_2 > 24`, as in the paper.
      rank: rank of the low-rank form (default 3).
      method: exponential method, one of ``flows.EXPM_METHODS`` (default "opt15") or a
        name registered with ``flows.register_exponential``.
      tol: tolerance for the jexpm methods (``None``: the dtype's unit roundoff).
      param_dtype: dtype of the parameters (default float32).
      rngs: random streams for the network and the low-rank offset.
    """

    name = "MatrixExpCoupling"

    def __init__(
        self,
        channels: int,
        *,
        hidden_channels: int = 128,
        residual_blocks: int = 8,
        low_rank: bool | None = None,
        rank: int = 3,
        method: str = "opt15",
        tol: float | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _matexp.check_method(method, tol)
        c2 = channels - channels // 2
        self.low_rank = c2 > 24 if low_rank is None else bool(low_rank)
        if self.low_rank and not (isinstance(rank, int) and 1 <= rank <= c2):
            raise ValueError(f"MatrixExpCoupling: rank must be in [1, {c2}], got {rank!r}")
        self.rank = rank
        self.method, self.tol = method, tol
        n_raw = 2 * rank * c2 if self.low_rank else c2 * c2
        super().__init__(
            channels,
            hidden_channels=hidden_channels,
            residual_blocks=residual_blocks,
            param_dtype=param_dtype,
            rngs=rngs,
            extra_outputs=n_raw,
        )
        rho = 1.0 / math.sqrt(c2) if self.low_rank else 1.0 / c2
        self.alpha = nnx.Param(jnp.full((n_raw,), 1.0 / 8, param_dtype))
        self.beta = nnx.Param(jnp.zeros((n_raw,), param_dtype))
        self.rho = nnx.Param(jnp.full((n_raw,), rho, param_dtype))
        sigma = jnp.zeros((n_raw,), param_dtype)
        if self.low_rank:
            u0 = jax.random.normal(rngs.params(), (rank * c2,), param_dtype) / math.sqrt(c2)
            sigma = sigma.at[: rank * c2].set(u0)
        self.sigma = nnx.Param(sigma)

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
        kw = {"method": self.method, "tol": self.tol}
        generator = self.generator(raw)
        if isinstance(generator, tuple):  # the low-rank form's factors
            u, v = generator
            e = _matexp.expm_lowrank(sign * u, v, **kw)
            trace = jnp.sum(u * jnp.swapaxes(v, -1, -2), axis=(-2, -1))
        else:
            s = generator
            e = _matexp.expm(sign * s, **kw)
            trace = jnp.trace(s, axis1=-2, axis2=-1)
        log_det = sign * _sum_per_member(trace)
        if inverse:
            return jnp.einsum("...ij,...j->...i", e, x2 - b), log_det
        return jnp.einsum("...ij,...j->...i", e, x2) + b, log_det


def squeeze(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, 4C): every 2x2 block of pixels becomes one pixel."""
    check_image(x, "squeeze")
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze: height and width must be even, got input of shape {x.shape}")
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(y: jax.Array) -> jax.Array:
    """Inverse of :func:`squeeze`: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
    check_image(y, "unsqueeze")
    b, h, w, c4 = y.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze: channels must be a multiple of 4, got shape {y.shape}")
    y = y.reshape(b, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, c4 // 4)


class Squeeze(nnx.Module):
    """Space-to-depth as a bijector (log-det 0); see :func:`squeeze`."""

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to latent: (B, H, W, C) -> (B, H/2, W/2, 4C)."""
        return squeeze(x), jnp.zeros(x.shape[:1], x.dtype)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Latent to data: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
        return unsqueeze(y), jnp.zeros(y.shape[:1], y.dtype)


class Split(nnx.Module):
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

    def __init__(self, channels: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if channels < 2:
            raise ValueError(f"Split: needs at least 2 channels, got {channels}")
        self.channels = channels
        self.kept = channels // 2
        zeros = nnx.initializers.zeros_init()
        self.prior = nnx.Conv(
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

    def forward_and_log_det(self, x: jax.Array):
        """Data to latent: x -> ((z1, eps), log_det)."""
        check_image(x, "Split", self.channels)
        z1, z2 = x[..., : self.kept], x[..., self.kept :]
        mean, log_scale = self._prior(z1)
        return (z1, (z2 - mean) * jnp.exp(-log_scale)), -_sum_per_member(log_scale)

    def inverse_and_log_det(self, y):
        """Latent to data: (z1, eps) -> (x, log_det)."""
        z1, eps = y
        check_image(z1, "Split", self.kept)
        check_image(eps, "Split", self.channels - self.kept, z1.shape[1:3])
        mean, log_scale = self._prior(z1)
        z2 = mean + eps * jnp.exp(log_scale)
        return jnp.concatenate([z1, z2], axis=-1), _sum_per_member(log_scale)
