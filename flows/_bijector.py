"""The bijector contract every flow layer follows, and the two ways layers compose.

Direction, once for all: ``forward_and_log_det`` maps data to latent,
``x -> (y, log|det dy/dx|)``, and ``inverse_and_log_det`` maps latent to data,
``y -> (x, log|det dx/dy|)``; log-dets are per batch member, shape (batch,). This is
the Glow paper's direction and Distrax's bijector contract (``forward`` and
``inverse`` derived from the two, the name from the class).

Composition is one thing: :class:`Chain` applies bijectors in turn, and :class:`Scan`
is a chain whose bijectors carry stacked parameters and run K times under one
``nnx.scan`` (flowjax's ``Scan``, "equivalent to ``Chain([...])``"). A flow step, a
level and the Glow are chains.

Inputs are checked once, where they enter: the public methods check the input against
what the bijector was built for and run the unchecked ``_forward_and_log_det`` /
``_inverse_and_log_det``, which chains call on their members, whose inputs follow from
the chain's by construction.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

M = TypeVar("M", bound=nnx.Module)
Carry = TypeVar("Carry")


class Bijector(nnx.Module):
    """An invertible layer with a tractable log-determinant (see the module docstring).

    Subclasses implement ``_forward_and_log_det`` and ``_inverse_and_log_det``
    on inputs that are already checked, and override :meth:`check_forward` (and
    :meth:`check_inverse` if the output differs in shape) to reject inputs they were
    not built for. Inputs and outputs are arrays with a leading batch axis, or tuples of
    them: a bijector that factors out ``factors`` latents returns ``(h, *latents)``, the
    array that goes on first.
    """

    #: Latents the forward pass factors out (a :class:`flows.Split`: 1).
    factors: int = 0

    @property
    def name(self) -> str:
        """The name of the bijector (its class name)."""
        return type(self).__name__

    def check_forward(self, x) -> None:  # a hook: by default nothing to check
        """Raise ``ValueError`` unless x is an input this bijector was built for."""

    def check_inverse(self, y) -> None:
        """Raise ``ValueError`` unless y is an output this bijector could give."""
        self.check_forward(y)

    @abc.abstractmethod
    def _forward_and_log_det(self, x) -> tuple[Any, jax.Array]:
        """Data to latent on a checked input."""

    @abc.abstractmethod
    def _inverse_and_log_det(self, y) -> tuple[Any, jax.Array]:
        """Latent to data on a checked input."""

    def forward_and_log_det(self, x) -> tuple[Any, jax.Array]:
        """Data to latent: ``(y, log|det dy/dx|)`` with log-det of shape (batch,)."""
        self.check_forward(x)
        return self._forward_and_log_det(x)

    def inverse_and_log_det(self, y) -> tuple[Any, jax.Array]:
        """Latent to data: ``(x, log|det dx/dy|)`` with log-det of shape (batch,)."""
        self.check_inverse(y)
        return self._inverse_and_log_det(y)

    def forward(self, x):
        """Data to latent, without the log-determinant."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y):
        """Latent to data, without the log-determinant."""
        return self.inverse_and_log_det(y)[0]

    def initialize(self, x) -> None:
        """Data-dependent initialisation from a batch x (e.g. 512 images).

        Every layer with an ``initializing`` mode (:class:`flows.ActNorm`) is put in it
        for one jitted forward pass, in which it sets itself from the activations
        reaching it and then transforms them as initialised.
        """
        self.set_attributes(initializing=True, raise_if_not_found=False)
        try:
            _initializing_forward(self, x)
        finally:
            self.set_attributes(initializing=False, raise_if_not_found=False)


@nnx.jit
def _initializing_forward(bijector: Bijector, x) -> None:
    bijector.forward_and_log_det(x)


class Chain(Bijector):
    """Bijectors applied in turn, in the order given, from data to latent.

    The bijectors become attributes under the given names, so their parameters read
    ``actnorm/shift`` and so on. The log-determinants add up in both directions; the
    inverse runs the bijectors in reverse order. (Distrax's ``Chain`` lists them in
    the opposite, function-composition order.)

    A member that factors out latents returns ``(h, *latents)``: the next member gets
    h, and the chain returns ``(h, *latents)`` with every member's latents in order.
    The inverse hands each member the last of them it factored out.

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
        self.factors = sum(b.factors for b in bijectors.values())

    @property
    def bijectors(self) -> tuple[Bijector, ...]:
        """The bijectors in data-to-latent order."""
        return tuple(getattr(self, name) for name in self.order)

    def check_forward(self, x) -> None:
        """The first bijector's check."""
        self.bijectors[0].check_forward(x)

    def check_inverse(self, y) -> None:
        """The last bijector's check."""
        self.bijectors[-1].check_inverse(y)

    def _forward_and_log_det(self, x) -> tuple[Any, jax.Array]:
        latents: tuple = ()
        log_dets = []
        for bijector in self.bijectors:
            x, ld = bijector._forward_and_log_det(x)
            if bijector.factors:
                x, *new = x
                latents = (*latents, *new)
            log_dets.append(ld)
        return ((x, *latents) if self.factors else x), _total(log_dets)

    def _inverse_and_log_det(self, y) -> tuple[Any, jax.Array]:
        latents = []
        if self.factors:
            y, *latents = y
        log_dets = []
        for bijector in reversed(self.bijectors):
            if k := bijector.factors:
                y, latents = (y, *latents[-k:]), latents[:-k]
            y, ld = bijector._inverse_and_log_det(y)
            log_dets.append(ld)
        return y, _total(log_dets)


def _total(log_dets: list[jax.Array]) -> jax.Array:
    """The sum, in order (no zeros added)."""
    total = log_dets[0]
    for ld in log_dets[1:]:
        total = total + ld
    return total


class Scan(Chain):
    """A chain repeated ``length`` times, its parameters stacked, run under one scan.

    ``create(rngs)`` builds one copy (a :class:`Chain`); the ``length`` copies are built
    under ``nnx.vmap`` with their own random draws, so every parameter carries a leading
    axis of length ``length``, and their bijectors become this chain's under the same
    names. Forward and inverse run the copies in turn (last to first for the inverse)
    as one ``nnx.scan``: tracing and compiling costs one copy, whatever ``length`` is.
    The copies may update their state (the data-dependent initialisation); the updates
    land in the stack.

    Args:
      length: copies K >= 1.
      create: ``rngs -> Chain``, one copy.
      rngs: random streams; each copy draws its own.
      unroll: copies per iteration of the scan, an int >= 1 (``jax.lax.scan``'s).
    """

    def __init__(self, length: int, create: Callable[[nnx.Rngs], Chain], *, rngs, unroll=1):
        step = stack(length, create, rngs)
        super().__init__(**{name: getattr(step, name) for name in step.order})
        if self.factors:
            raise ValueError("Scan: the repeated chain cannot factor out latents")
        self.length = length
        self.unroll = unroll

    def _run(self, x, inverse: bool) -> tuple[Any, jax.Array]:
        one = Chain._inverse_and_log_det if inverse else Chain._forward_and_log_det

        def body(carry, copy: Scan):
            x, log_det = carry
            x, ld = one(copy, x)
            return x, log_det + ld

        carry = (x, jnp.zeros(x.shape[:1], x.dtype))
        return scan(body, carry, self, reverse=inverse, unroll=self.unroll)

    def _forward_and_log_det(self, x) -> tuple[Any, jax.Array]:
        return self._run(x, inverse=False)

    def _inverse_and_log_det(self, y) -> tuple[Any, jax.Array]:
        return self._run(y, inverse=True)


def stack(count: int, create: Callable[[nnx.Rngs], M], rngs: nnx.Rngs) -> M:
    """``count`` >= 1 copies of ``create(rngs)``, each with its own random draws, stacked."""

    @nnx.split_rngs(splits=count)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create_all(rngs: nnx.Rngs) -> M:
        return create(rngs)

    return create_all(rngs)


def scan(
    body: Callable[[Carry, M], Carry],
    carry: Carry,
    stacked: M,
    *,
    reverse: bool = False,
    unroll: int = 1,
) -> Carry:
    """``carry = body(carry, copy)`` for every copy of a :func:`stack` in turn.

    Last to first with ``reverse``; ``unroll`` copies per loop iteration, as in
    ``jax.lax.scan``. ``body`` may update the copy's state; the updates land in
    ``stacked``.
    """
    # Tree mode (graph=False) treats the modules as plain pytrees: the stacks share no
    # references, and unlike graph mode it also runs inside a jax.jit or jax.grad
    # that closes over the model instead of taking it as an argument.
    scanned = nnx.scan(
        body,
        in_axes=(nnx.Carry, 0),
        out_axes=nnx.Carry,
        reverse=reverse,
        unroll=unroll,
        graph=False,
    )
    return scanned(carry, stacked)


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
