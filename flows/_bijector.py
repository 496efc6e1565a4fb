"""The bijector contract every flow layer follows, and the chain that composes layers.

Direction, once for all: ``forward_and_log_det`` maps data to latent,
``x -> (y, log|det dy/dx|)``, and ``inverse_and_log_det`` maps latent to data,
``y -> (x, log|det dx/dy|)``; log-dets are per batch member, shape (batch,). This is
the Glow paper's direction and Distrax's bijector contract (``forward`` and
``inverse`` derived from the two, the name from the class).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Bijector(nnx.Module):
    """An invertible layer with a tractable log-determinant (see the module docstring).

    Subclasses implement :meth:`forward_and_log_det` and :meth:`inverse_and_log_det`.
    Inputs and outputs are arrays with a leading batch axis, or pytrees of them (a
    split returns the kept half and the factored-out latent).
    """

    @property
    def name(self) -> str:
        """The name of the bijector (its class name)."""
        return type(self).__name__

    def forward_and_log_det(self, x):
        """Data to latent: ``(y, log|det dy/dx|)`` with log-det of shape (batch,)."""
        raise NotImplementedError

    def inverse_and_log_det(self, y):
        """Latent to data: ``(x, log|det dx/dy|)`` with log-det of shape (batch,)."""
        raise NotImplementedError

    def forward(self, x):
        """Data to latent, without the log-determinant."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y):
        """Latent to data, without the log-determinant."""
        return self.inverse_and_log_det(y)[0]


class Chain(Bijector):
    """Bijectors applied in turn, in the order given, from data to latent.

    The bijectors become attributes under the given names, so their parameters read
    ``actnorm/shift`` and so on. The log-determinants add up in both directions; the
    inverse runs the bijectors in reverse order. (Distrax's ``Chain`` lists them in
    the opposite, function-composition order.)

    Args:
      **bijectors: the bijectors by name, in data-to-latent order.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flows
      >>> chain = flows.Chain(
      ...     actnorm=flows.ActNorm(2, 2, 3, rngs=nnx.Rngs(0)), squeeze=flows.Squeeze())
      >>> y, log_det = chain.forward_and_log_det(jnp.ones((1, 2, 2, 3)))
      >>> y.shape, log_det.shape
      ((1, 1, 1, 12), (1,))
    """

    # Named attributes rather than an ``nnx.List``: a list's integer keys beside the
    # string keys that ``nnx.capture`` adds cannot pass through ``nnx.scan`` (flax 0.12).

    def __init__(self, **bijectors: Bijector):
        if not bijectors:
            raise ValueError("Chain: needs at least one bijector")
        self.order = tuple(bijectors)
        for name, bijector in bijectors.items():
            setattr(self, name, bijector)

    @property
    def bijectors(self) -> tuple[Bijector, ...]:
        """The bijectors in data-to-latent order."""
        return tuple(getattr(self, name) for name in self.order)

    def forward_and_log_det(self, x):
        """Data to latent through every bijector in order."""
        log_det = None
        for bijector in self.bijectors:
            x, ld = bijector.forward_and_log_det(x)
            log_det = ld if log_det is None else log_det + ld
        return x, log_det

    def inverse_and_log_det(self, y):
        """Latent to data through every bijector in reverse order."""
        log_det = None
        for bijector in reversed(self.bijectors):
            y, ld = bijector.inverse_and_log_det(y)
            log_det = ld if log_det is None else log_det + ld
        return y, log_det


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


def sum_per_member(x: jax.Array) -> jax.Array:
    """Sum over every axis but the leading batch axis."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def constant_log_det(value: jax.Array, x: jax.Array) -> jax.Array:
    """A log-determinant that is the same for every member of the batch of x."""
    return jnp.broadcast_to(value, x.shape[:1])
