"""Batched matrix products, written in the fastest form for the shape and backend.

XLA:CPU's batched ``dot_general`` is slow for tiny matrices, so for small ``n`` on the
CPU a product is written as a broadcast multiply followed by a sum, which XLA fuses into
one loop. Which form wins was measured with ``python -m jexpm.bench --products``; on
accelerators, and for larger ``n`` everywhere, ``dot`` at HIGHEST precision wins and
keeps full float32 accuracy where the hardware would otherwise round to bf16/tf32.

The sum is written as a reduction with the computation ``x - (-y)`` (exactly x + y in
IEEE arithmetic). XLA:CPU hands float32 reductions whose computation is a plain add to
YNNPACK, which then fuses the whole polynomial around them into one kernel; for chains
of tiny products that kernel was 10-40x slower than XLA's own loop fusion (65536 6x6
float32, four products with their linear combinations: 186 ms against 4.5 ms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Largest n for which each elementwise form beats ``dot`` on XLA:CPU (measured).
_CPU_OUTER_MAX_N = 8
_CPU_BROADCAST_MAX_N = 32


def matmul_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` through ``dot_general`` at full precision."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _add(x: jax.Array, y: jax.Array) -> jax.Array:
    return x - (-y)  # x + y, in a form XLA:CPU does not offload (see module docstring)


def matmul_broadcast(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` as one fused multiply-and-reduce over a broadcast (n, n, n) block."""
    prod = a[..., :, :, None] * b[..., None, :, :]
    return lax.reduce(prod, np.zeros((), prod.dtype), _add, (prod.ndim - 2,))


def matmul_outer(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` as a sum of n rank-one updates, unrolled at trace time."""
    n = a.shape[-1]
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for k in range(1, n):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Batched ``a @ b`` for square (..., n, n) operands, formulation chosen at trace time."""
    n = a.shape[-1]
    if jax.default_backend() == "cpu":
        if n <= _CPU_OUTER_MAX_N:
            return matmul_outer(a, b)
        if n <= _CPU_BROADCAST_MAX_N:
            return matmul_broadcast(a, b)
    return matmul_dot(a, b)
