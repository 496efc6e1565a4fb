"""Multi-scale Glow: flow steps, levels that own their reshaping, and the model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from . import _random, _stacked
from ._actnorm import ActNorm
from ._bijector import Bijector, Chain, check_image
from ._conv1x1 import MatrixExp1x1Conv
from ._couplings import COUPLINGS, Coupling, CouplingOptions
from ._matexp import check_method
from ._reshaping import Split, Squeeze

Latents = tuple[jax.Array, ...]
Shape = tuple[int, int, int]


class FlowStep(Chain):
    """One step of flow: ActNorm -> matrix-exp 1x1 conv -> coupling.

    Args:
      shape: (height, width, channels) of the input.
      coupling: a name in ``flows.COUPLINGS``.
      options: the coupling's options; the 1x1 convolution uses their ``method``,
        ``tol`` and ``param_dtype``.
      rngs: random streams.
    """

    def __init__(self, shape: Shape, *, coupling: str, options: CouplingOptions, rngs: nnx.Rngs):
        h, w, c = shape
        super().__init__(
            actnorm=ActNorm(h, w, c, param_dtype=options.param_dtype, rngs=rngs),
            conv=MatrixExp1x1Conv(
                c,
                method=options.method,
                tol=options.tol,
                param_dtype=options.param_dtype,
                rngs=rngs,
            ),
            coupling=COUPLINGS[coupling].from_options(c, options, rngs=rngs),
        )
        self.actnorm: ActNorm
        self.conv: MatrixExp1x1Conv
        self.coupling: Coupling


class Level(Bijector):
    """One scale of Glow: squeeze, ``num_steps`` flow steps, then (except at the top) a split.

    The steps' parameters are stacked along a leading axis and the steps run under
    one ``nnx.scan``, so tracing and compiling a level costs one step whatever
    ``num_steps`` is.

    ``forward_and_log_det(x)`` returns ``((h, eps), log_det)``: h goes on to the next
    level (at the top level it is the last latent) and eps is the latent the split
    factors out (``None`` at the top level); ``inverse_and_log_det((h, eps))`` undoes it.

    Args:
      input_shape: (height, width, channels) of the input; height and width even.
      num_steps: flow steps K >= 1.
      split: whether the level ends with a :class:`Split`.
      coupling: a name in ``flows.COUPLINGS``.
      options: the couplings' options (see :class:`FlowStep`); their ``unroll`` also
        sets the steps run per iteration of the level's scan.
      rngs: random streams; each step draws its own.
    """

    def __init__(
        self,
        input_shape: Shape,
        num_steps: int,
        *,
        split: bool,
        coupling: str,
        options: CouplingOptions,
        rngs: nnx.Rngs,
    ):
        h, w, c = input_shape
        self.input_shape = input_shape
        self.step_shape = (h // 2, w // 2, 4 * c)
        self.unroll = _stacked.copies_per_iteration(options.unroll, num_steps)
        self.squeeze = Squeeze()

        self.steps = _stacked.stack(
            num_steps,
            lambda rngs: FlowStep(self.step_shape, coupling=coupling, options=options, rngs=rngs),
            rngs,
        )
        self.split = (
            Split(self.step_shape[2], param_dtype=options.param_dtype, rngs=rngs) if split else None
        )

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

    def _steps(self, x: jax.Array, *, inverse: bool = False, initialize: bool = False):
        """X through every step (in reverse for the inverse), as one scan."""

        def body(carry, step: FlowStep):
            x, log_det = carry
            if initialize:
                step.actnorm.initialize(x)
            x, ld = step.inverse_and_log_det(x) if inverse else step.forward_and_log_det(x)
            return x, log_det + ld

        carry = (x, jnp.zeros(x.shape[:1], x.dtype))
        return _stacked.scan(body, carry, self.steps, reverse=inverse, unroll=self.unroll)

    def _forward(self, x: jax.Array, initialize: bool):
        check_image(x, self.name, self.input_shape[2], self.input_shape[:2])
        x, log_det = self._steps(self.squeeze.forward(x), initialize=initialize)
        if self.split is None:
            return (x, None), log_det
        (x, eps), ld = self.split.forward_and_log_det(x)
        return (x, eps), log_det + ld

    def forward_and_log_det(self, x: jax.Array):
        """Data to latent: x -> ((h, eps), log_det)."""
        return self._forward(x, initialize=False)

    def initialize(self, x: jax.Array):
        """Data-dependent ActNorm initialisation from x; returns what forward returns."""
        return self._forward(x, initialize=True)

    def inverse_and_log_det(self, y):
        """Latent to data: (h, eps) -> (x, log_det)."""
        x, eps = y
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        if self.split is not None:
            x, log_det = self.split.inverse_and_log_det((x, eps))
        x, ld = self._steps(x, inverse=True)
        return self.squeeze.inverse(x), log_det + ld


class Glow(Bijector):
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

    Args:
      image_shape: (height, width, channels) of the data (default (32, 32, 3)); height
        and width must be divisible by :math:`2^{levels}`.
      levels: number of levels L (default 3).
      steps_per_level: flow steps per level, an int for all levels or one per level
        (default (8, 4, 2)).
      hidden_channels: width of the coupling networks (default 128).
      residual_blocks: residual blocks per coupling network (default 8).
      coupling: "matrix_exp" (default), "affine" or "additive".
      low_rank: low-rank matrix-exp couplings: ``None`` (default) when the
        transformed half has more than 24 channels, or ``True``/``False`` everywhere.
      rank: rank of the low-rank couplings (default 3).
      action: matrix-exp couplings apply their exponential to each pixel's vector
        without forming it (``True``), form it (``False``), or ``None`` (default) for
        the faster per size (``flows.MatrixExpCoupling``).
      method: exponential method for every matrix exponential in the model, one of
        ``flows.EXPM_METHODS`` ("opt15" (default), "ps", "baseline", "jax.scipy") or a
        name registered with ``flows.register_exponential``.
      tol: tolerance for the jexpm methods (default ``None``: the dtype's unit roundoff).
      param_dtype: dtype of all parameters (default float32).
      unroll: flow steps (and residual blocks) run per iteration of their scans, as in
        ``jax.lax.scan`` (default 1). ``True`` unrolls the scans: compile time then grows
        with the depth, and on XLA:CPU a training step at the paper's CIFAR-10 depth
        (8/4/2 steps) was about 12% faster (``docs/guides/flows.md``).
      rngs: random streams; ``params`` draws the initial weights.

    Raises:
      ValueError: a bad shape, level or step count, coupling, method, tolerance or unroll.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from flows import Glow
      >>> model = Glow((8, 8, 3), levels=2, steps_per_level=1, hidden_channels=8,
      ...              residual_blocks=1, rngs=nnx.Rngs(0))
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
        *,
        levels: int = 3,
        steps_per_level: int | Sequence[int] = (8, 4, 2),
        hidden_channels: int = 128,
        residual_blocks: int = 8,
        coupling: str = "matrix_exp",
        low_rank: bool | None = None,
        rank: int = 3,
        action: bool | None = None,
        method: str = "opt15",
        tol: float | None = None,
        param_dtype=jnp.float32,
        unroll: int | bool = 1,
        rngs: nnx.Rngs,
    ):
        if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
            raise ValueError(
                f"Glow: image_shape must be (height, width, channels), got {tuple(image_shape)}"
            )
        height, width, channels = (int(d) for d in image_shape)
        if not (isinstance(levels, int) and levels >= 1):
            raise ValueError(f"Glow: levels must be a positive int, got {levels!r}")
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"Glow: height and width must be divisible by 2**levels = {2**levels} "
                f"(each level squeezes 2x2); got image_shape {tuple(image_shape)}"
            )
        steps = (steps_per_level,) * levels if isinstance(steps_per_level, int) else steps_per_level
        steps = tuple(steps)
        if len(steps) != levels or any(not isinstance(k, int) or k < 1 for k in steps):
            raise ValueError(
                f"Glow: steps_per_level must be a positive int or {levels} positive ints, "
                f"got {steps_per_level!r}"
            )
        if coupling not in COUPLINGS:
            raise ValueError(
                f"Glow: unknown coupling {coupling!r}; choose one of {tuple(COUPLINGS)}"
            )
        check_method(method, tol)
        self.image_shape = (height, width, channels)
        self.options = CouplingOptions(
            hidden_channels=hidden_channels,
            residual_blocks=residual_blocks,
            low_rank=low_rank,
            rank=rank,
            action=action,
            method=method,
            tol=tol,
            param_dtype=param_dtype,
            unroll=unroll,
        )
        built = []
        shape = self.image_shape
        for i, k in enumerate(steps):
            level = Level(
                shape,
                k,
                split=i < levels - 1,
                coupling=coupling,
                options=self.options,
                rngs=rngs,
            )
            built.append(level)
            shape = level.output_shape
        self.levels = nnx.List(built)

    @property
    def latent_shapes(self) -> tuple[Shape, ...]:
        """Shapes (without batch) of the latents, finest first, top level last."""
        split = [level.latent_shape for level in self.levels if level.latent_shape is not None]
        return (*split, self.levels[-1].output_shape)

    @property
    def num_dims(self) -> int:
        """Dimensions D of one datum, height x width x channels."""
        return math.prod(self.image_shape)

    def forward_and_log_det(self, x: jax.Array) -> tuple[Latents, jax.Array]:
        """Data to latents: x (B, H, W, C) -> (latents, log|det dz/dx|) with log-det (B,)."""
        return self._forward(x, initialize=False)

    def _forward(self, x: jax.Array, initialize: bool) -> tuple[Latents, jax.Array]:
        check_image(x, "Glow", self.image_shape[2], self.image_shape[:2])
        latents = []
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        for level in self.levels:
            (x, eps), ld = level.initialize(x) if initialize else level.forward_and_log_det(x)
            log_det = log_det + ld
            if eps is not None:
                latents.append(eps)
        return (*latents, x), log_det

    def encode(self, x: jax.Array) -> Latents:
        """Latents of x, finest first (shapes :attr:`latent_shapes` with the batch)."""
        return self.forward_and_log_det(x)[0]

    def inverse_and_log_det(self, latents: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Latents to data: returns (x, log|det dx/dz|)."""
        shapes = self.latent_shapes
        if len(latents) != len(shapes) or any(
            tuple(z.shape[1:]) != s or z.ndim != 4 for z, s in zip(latents, shapes, strict=False)
        ):
            got = [tuple(z.shape) for z in latents]
            raise ValueError(
                f"Glow: expected latents of shapes (batch, *s) for s in {shapes}, got {got}"
            )
        eps = list(latents[:-1])
        x = latents[-1]
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        for level in reversed(self.levels):
            x, ld = level.inverse_and_log_det((x, eps.pop() if level.split is not None else None))
            log_det = log_det + ld
        return x, log_det

    def initialize(self, x: jax.Array) -> None:
        """Data-dependent initialisation of every ActNorm from a batch x (e.g. 512 images).

        Runs one jitted forward pass that sets each ActNorm from the activations
        reaching it, so every step starts normalised for this data.
        """
        _initialize(self, x)

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
            temperature * _random.normal(k, (n, *s), dtype)
            for k, s in zip(keys, self.latent_shapes, strict=True)
        ]
        return self.inverse_and_log_det(latents)[0]


@nnx.jit
def _initialize(model: Glow, x: jax.Array) -> None:
    model._forward(x, initialize=True)


def _standard_normal_log_prob(z: jax.Array) -> jax.Array:
    axes = tuple(range(1, z.ndim))
    d = math.prod(z.shape[1:])
    return -0.5 * jnp.sum(z * z, axis=axes) - 0.5 * d * math.log(2 * math.pi)


def dequantize(images: jax.Array, key: jax.Array) -> jax.Array:
    """8-bit images (uint8, 0..255) to continuous x = (images + u) / 256 - 1/2, u ~ U[0, 1)."""
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8:
        raise TypeError(f"dequantize: expected uint8 images, got dtype {images.dtype}")
    u = _random.uniform(key, images.shape, jnp.float32)
    return (images.astype(jnp.float32) + u) / 256.0 - 0.5


def to_uint8(x: jax.Array) -> jax.Array:
    """Continuous x in [-1/2, 1/2] back to 8-bit images (floor, clipped to 0..255)."""
    return jnp.clip(jnp.floor((x + 0.5) * 256.0), 0, 255).astype(jnp.uint8)
