"""Repeated layers with stacked parameters, run under one scan.

A level's K flow steps (and a coupling network's residual blocks) are K copies of
one module. Built with :func:`stack`, their parameters carry a leading axis of length
K; :func:`scan` runs them in turn with ``nnx.scan``. Tracing and compiling the whole
stack then costs what one copy costs, whatever K is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flax import nnx

M = TypeVar("M", bound=nnx.Module)
Carry = TypeVar("Carry")


def stack(count: int, create: Callable[[nnx.Rngs], M], rngs: nnx.Rngs) -> M:
    """``count`` >= 1 copies of ``create(rngs)``, each with its own random draws, stacked."""

    @nnx.split_rngs(splits=count)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create_all(rngs: nnx.Rngs) -> M:
        return create(rngs)

    return create_all(rngs)


def copies_per_iteration(unroll: int | bool, count: int) -> int:
    """``unroll`` as the int a module keeps: ``True`` is every copy, ``False`` is 1.

    Modules keep the int, not the flag: ``True == 1`` in Python, so a kept ``True``
    would make an unrolled model's static structure compare equal to a rolled one's,
    and JAX's and NNX's trace caches would hand one the other's compiled loop.

    Raises:
      ValueError: ``unroll`` is neither a bool nor an int >= 1.
    """
    if isinstance(unroll, bool):
        return count if unroll else 1
    if isinstance(unroll, int) and unroll >= 1:
        return unroll
    raise ValueError(f"unroll must be True, False or an int >= 1, got {unroll!r}")


def scan(
    body: Callable[[Carry, M], Carry],
    carry: Carry,
    stacked: M,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
) -> Carry:
    """``carry = body(carry, copy)`` for every copy in turn (last to first with ``reverse``).

    ``body`` may update the copy's state (e.g. a data-dependent initialisation); the
    updates land in ``stacked``. ``unroll`` copies run per loop iteration, as in
    ``jax.lax.scan`` (``True``: all of them in one iteration; compile time then grows
    with the count, see :class:`flows.Glow`).
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
