"""Multi-scale Glow: flow steps, levels and the model, each a chain of bijectors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from . import _backend
from ._actnorm import ActNorm
from ._bijector import Chain, Scan, check_image
from ._conv1x1 import MatrixExp1x1Conv
from ._couplings import COUPLINGS, Coupling
from ._options import GlowOptions, copies_per_iteration
from ._reshaping import Split, Squeeze

Latents = tuple[jax.Array, ...]
Shape = tuple[int, int, int]


class FlowStep(Chain):
    """One step of flow: ActNorm -> matrix-exp 1x1 conv -> coupling.

    Args:
      shape: (height, width, channels) of the input.
      options: the model's options (the coupling is ``options.coupling``).
      rngs: random streams.
    """

    def __init__(self, shape: Shape, options: GlowOptions, *, rngs: nnx.Rngs):
        h, w, c = shape
        super().__init__(
            actnorm=ActNorm(h, w, c, param_dtype=options.param_dtype, rngs=rngs),
            conv=MatrixExp1x1Conv(c, options, rngs=rngs),
            coupling=COUPLINGS[options.coupling](c, options, rngs=rngs),
        )
        self.actnorm: ActNorm
        self.conv: MatrixExp1x1Conv
        self.coupling: Coupling


class Level(Chain):
    """One scale of Glow: squeeze, ``num_steps`` flow steps, then (except at the top) a split.

    A chain of :class:`flows.Squeeze`, a :class:`flows.Scan` of :class:`FlowStep` (its
    parameters stacked, one scan whatever ``num_steps`` is) and :class:`flows.Split`.
    ``forward_and_log_det(x)`` returns ``((h, eps), log_det)`` with a split, h going on
    to the next level and eps the latent it factors out, and ``(h, log_det)`` at the
    top; ``inverse_and_log_det`` undoes it.

    Args:
      input_shape: (height, width, channels) of the input; height and width even.
      num_steps: flow steps K >= 1.
      split: whether the level ends with a :class:`flows.Split`.
      options: the model's options (see :class:`FlowStep`); their ``scan_unroll`` also
        sets the steps run per iteration of the level's scan.
      rngs: random streams; each step draws its own.
    """

    def __init__(
        self,
        input_shape: Shape,
        num_steps: int,
        *,
        split: bool,
        options: GlowOptions,
        rngs: nnx.Rngs,
    ):
        h, w, c = input_shape
        self.input_shape = input_shape
        self.step_shape = (h // 2, w // 2, 4 * c)
        steps = Scan(
            num_steps,
            lambda rngs: FlowStep(self.step_shape, options, rngs=rngs),
            rngs=rngs,
            unroll=copies_per_iteration(options.scan_unroll, num_steps),
        )
        if split:
            kept = Split(self.step_shape[2], param_dtype=options.param_dtype, rngs=rngs)
            super().__init__(squeeze=Squeeze(), steps=steps, split=kept)
        else:
            super().__init__(squeeze=Squeeze(), steps=steps)
            self.split = None
        self.steps: Scan

    @property
    def latent_shape(self) -> Shape | None:
        """Shape (without batch) of the latent the split factors out; None at the top."""
        h, w, c = self.step_shape
        return None if self.split is None else (h, w, c - c // 2)

    @property
    def output_shape(self) -> Shape:
        """Shape (without batch) of what goes on to the next level."""
        h, w, c = self.step_shape
        return (h, w, c) if self.split is None else (h, w, c // 2)

    def check_forward(self, x) -> None:
        """Images of the level's input shape."""
        check_image(x, self.name, self.input_shape[2], self.input_shape[:2])


class Glow(Chain):
    r"""Multi-scale Glow whose 1x1 convolutions and couplings are matrix exponentials.

    The architecture of Xiao & Liu (2020), after Kingma & Dhariwal's Glow. Each
    level squeezes 2x2 pixels into channels, runs ``steps`` flow steps, and (except
    the top level) factors half the channels out as a latent::

        x (H, W, C)
          │  level 1: squeeze → (H/2, W/2, 4C) → [ActNorm → exp(W) 1x1 → exp(S) coupling] × K₁
          │           split ──────────────────────────────────────────► ε₁ (H/2, W/2, 2C)
          │  level 2: squeeze → (H/4, W/4, 4C) → [step] × K₂
          │           split ──────────────────────────────────────────► ε₂ (H/4, W/4, 4C)
          ⋮
          └  top level: squeeze → [step] × K_L ──────────────────────────► z_L

    Each level's steps run under one ``nnx.scan`` over stacked parameters, so
    compile time does not grow with the number of steps. Under ``nnx.capture(...,
    nnx.Intermediate)`` the exponential layers record their (m, s)
    (:func:`flows.expm_statistics`).

    Every latent is standard normal under the model, so
    :math:`\log p(x) = \sum_i \log \mathcal{N}(z_i; 0, I) + \log|\det \partial z/\partial x|`.
    Direction: ``forward_and_log_det`` / ``encode`` map data to latents;
    ``inverse_and_log_det`` / ``sample`` map latents to data.

    Data live in :math:`[-1/2, 1/2]`: 8-bit images are dequantised by
    :func:`dequantize` and scored in bits per dimension by :meth:`bits_per_dim`.

    The model is a chain of its levels; its options are one :class:`flows.GlowOptions`
    (the paper's CIFAR-10 model by default), checked when that is built.

    Args:
      image_shape: (height, width, channels) of the data (default (32, 32, 3)); height
        and width must be divisible by :math:`2^{levels}`.
      options: the model's options (default: ``flows.GlowOptions()``).
      rngs: random streams; ``params`` draws the initial weights.

    Raises:
      ValueError: a bad image shape for the options' levels.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from flows import Glow, GlowOptions
      >>> options = GlowOptions(levels=2, steps_per_level=(1, 1), hidden_channels=8,
      ...                       residual_blocks=1)
      >>> model = Glow((8, 8, 3), options, rngs=nnx.Rngs(0))
      >>> x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3)) - 0.5
      >>> z, log_det = model.forward_and_log_det(x)
      >>> [l.shape for l in z]
      [(2, 4, 4, 6), (2, 2, 2, 24)]
      >>> x_back, _ = model.inverse_and_log_det(z)
      >>> bool(jnp.allclose(x_back, x, atol=1e-5))
      True

    References:
      D. P. Kingma and P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
      Convolutions", NeurIPS 2018.
      C. Xiao and L. Liu, "Generative Flows with Matrix Exponential", ICML 2020
      (arXiv:2007.09651).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (32, 32, 3),
        options: GlowOptions | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        options = options or GlowOptions()
        if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
            raise ValueError(
                f"Glow: image_shape must be (height, width, channels), got {tuple(image_shape)}"
            )
        height, width, channels = (int(d) for d in image_shape)
        levels = options.levels
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"Glow: height and width must be divisible by 2**levels = {2**levels} "
                f"(each level squeezes 2x2); got image_shape {tuple(image_shape)}"
            )
        self.image_shape = (height, width, channels)
        self.options = options
        built = {}
        shape = self.image_shape
        for i, k in enumerate(options.steps_per_level):
            level = Level(shape, k, split=i < levels - 1, options=options, rngs=rngs)
            built[f"level{i + 1}"] = level
            shape = level.output_shape
        super().__init__(**built)

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels, finest first."""
        return self.bijectors  # pyright: ignore[reportReturnType]

    @property
    def latent_shapes(self) -> tuple[Shape, ...]:
        """Shapes (without batch) of the latents, finest first, top level last."""
        split = [level.latent_shape for level in self.levels if level.latent_shape is not None]
        return (*split, self.levels[-1].output_shape)

    @property
    def num_dims(self) -> int:
        """Dimensions D of one datum, height x width x channels."""
        return math.prod(self.image_shape)

    def check_forward(self, x) -> None:
        """Images of the model's shape."""
        check_image(x, "Glow", self.image_shape[2], self.image_shape[:2])

    def check_inverse(self, y) -> None:
        """Latents of :attr:`latent_shapes`, with a batch axis."""
        shapes = self.latent_shapes
        if len(y) != len(shapes) or any(
            z.ndim != 4 or tuple(z.shape[1:]) != s for z, s in zip(y, shapes, strict=False)
        ):
            got = [tuple(z.shape) for z in y]
            raise ValueError(
                f"Glow: expected latents of shapes (batch, *s) for s in {shapes}, got {got}"
            )

    def _forward_and_log_det(self, x) -> tuple[Latents, jax.Array]:
        """Data to latents: x (B, H, W, C) -> (latents, log|det dz/dx|) with log-det (B,).

        The chain gives (z, eps1, eps2, ...); the latents are (eps1, eps2, ..., z).
        """
        out, log_det = super()._forward_and_log_det(x)
        z, *eps = out if self.factors else (out,)
        return (*eps, z), log_det

    def _inverse_and_log_det(self, y) -> tuple[jax.Array, jax.Array]:
        """Latents to data: returns (x, log|det dx/dz|)."""
        *eps, z = y
        return super()._inverse_and_log_det((z, *eps) if self.factors else z)

    def encode(self, x: jax.Array) -> Latents:
        """Latents of x, finest first (shapes :attr:`latent_shapes` with the batch)."""
        return self.forward_and_log_det(x)[0]

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density of continuous data x in [-1/2, 1/2], shape (B,)."""
        latents, log_det = self.forward_and_log_det(x)
        return log_det + sum(_standard_normal_log_prob(z) for z in latents)

    def bits_per_dim(self, images: jax.Array, key: jax.Array) -> jax.Array:
        r"""Bits per dimension of 8-bit images under uniform dequantisation, shape (B,).

        :math:`-(\log p(x) - D \log 256) / (D \log 2)` with x from :func:`dequantize`:
        an upper bound on the discrete model's code length per sub-pixel.
        """
        x = dequantize(images, key)
        d = self.num_dims
        return -(self.log_prob(x) - d * math.log(256.0)) / (d * math.log(2.0))

    def sample(self, key: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
        """Draw n samples in [-1/2, 1/2]-space; every latent is N(0, temperature²).

        Use :func:`to_uint8` to turn them into 8-bit images.
        """
        keys = jax.random.split(key, len(self.latent_shapes))
        dtype = self.options.param_dtype
        latents = [
            temperature * _backend.normal(k, (n, *s), dtype)
            for k, s in zip(keys, self.latent_shapes, strict=True)
        ]
        return self.inverse_and_log_det(latents)[0]


def _standard_normal_log_prob(z: jax.Array) -> jax.Array:
    axes = tuple(range(1, z.ndim))
    d = math.prod(z.shape[1:])
    return -0.5 * jnp.sum(z * z, axis=axes) - 0.5 * d * math.log(2 * math.pi)


def dequantize(images: jax.Array, key: jax.Array) -> jax.Array:
    """8-bit images (uint8, 0..255) to continuous x = (images + u) / 256 - 1/2, u ~ U[0, 1)."""
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8:
        raise TypeError(f"dequantize: expected uint8 images, got dtype {images.dtype}")
    u = _backend.uniform(key, images.shape, jnp.float32)
    return (images.astype(jnp.float32) + u) / 256.0 - 0.5


def to_uint8(x: jax.Array) -> jax.Array:
    """Continuous x in [-1/2, 1/2] back to 8-bit images (floor, clipped to 0..255)."""
    return jnp.clip(jnp.floor((x + 0.5) * 256.0), 0, 255).astype(jnp.uint8)
