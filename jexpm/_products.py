"""Batched matrix products, written in the fastest form for the shape and backend.

XLA:CPU's batched ``dot_general`` is slow for tiny matrices, so for small ``n`` on the
CPU a product is written as a broadcast multiply followed by a sum, which XLA fuses into
one loop. Up to which ``n`` that form wins is a measured backend constant
(:mod:`jexpm._tuning`; docs/design.md, sections 5 and 6); on accelerators, and for
larger ``n`` everywhere, ``dot`` at HIGHEST precision wins and keeps full float32
accuracy where the hardware would otherwise round to bf16/tf32.

The sum is written as a reduction with the computation ``x - (-y)`` (exactly x + y in
IEEE arithmetic). XLA:CPU hands float32 reductions whose computation is a plain add to
YNNPACK, which then fuses the whole polynomial around them into one kernel; for chains
of tiny products that kernel was 10-40x slower than XLA's own loop fusion (65536 6x6
float32, four products with their linear combinations: 186 ms against 4.5 ms).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _tuning


def matmul_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` through ``dot_general`` at full precision."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _add(x: jax.Array, y: jax.Array) -> jax.Array:
    return x - (-y)  # x + y, in a form XLA:CPU does not offload (see module docstring)


def _max(x: jax.Array, y: jax.Array) -> jax.Array:
    return -lax.min(-x, -y)  # max(x, y), NaN-propagating, not offloaded either


def sum_axis(x: jax.Array, axis: int) -> jax.Array:
    """Sum over one axis, kept in XLA's own fusions (see module docstring)."""
    return lax.reduce(x, np.zeros((), x.dtype), _add, (axis % x.ndim,))


def max_axis(x: jax.Array, axis: int) -> jax.Array:
    """Maximum over one non-empty axis, kept in XLA's own fusions."""
    return lax.reduce(x, np.array(-np.inf, x.dtype), _max, (axis % x.ndim,))


@jax.custom_jvp
def matmul_broadcast(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` as one fused multiply-and-reduce over a broadcast (n, n, n) block."""
    return sum_axis(a[..., :, :, None] * b[..., None, :, :], -2)


@matmul_broadcast.defjvp
def _matmul_broadcast_jvp(primals, tangents):
    # The product rule in products of the same form: differentiating the reduction
    # itself would materialise the (n, n, n) block.
    a, b = primals
    da, db = tangents
    return matmul_broadcast(a, b), matmul_broadcast(da, b) + matmul_broadcast(a, db)


FORMS = {"dot": matmul_dot, "broadcast": matmul_broadcast}
Matmul = Callable[[jax.Array, jax.Array], jax.Array]


def formulation(n: int, itemsize: int, tuning: _tuning.Tuning | None = None) -> str:
    """The product form for n x n matrices of ``itemsize``-byte entries.

    ``tuning``: the backend's measured choice (default: the default backend's).
    """
    tuning = tuning or _tuning.for_backend()
    if n <= tuning.broadcast_max_n.get(itemsize, 0):
        return "broadcast"
    return "dot"


def check_form(form: str | None) -> str | None:
    """``form`` if it is None (the measured choice) or one of :data:`FORMS`."""
    if form is not None and form not in FORMS:
        raise ValueError(f"unknown product form {form!r}; expected one of {list(FORMS)}")
    return form


def matmul(
    a: jax.Array, b: jax.Array, form: str | None = None, tuning: _tuning.Tuning | None = None
) -> jax.Array:
    """Batched ``a @ b`` for square (..., n, n) operands.

    ``form`` is a static choice: None takes :func:`formulation`'s for ``tuning``, at
    trace time.
    """
    return FORMS[form or formulation(a.shape[-1], a.dtype.itemsize, tuning)](a, b)
