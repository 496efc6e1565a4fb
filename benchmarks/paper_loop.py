"""The paper's baseline as its authors ran it: an eager loop with a host read per term.

Xiao and Liu's ``expm`` (ICML 2020; code changyi7231/MEF, ``models/utils.py``) is a
PyTorch loop run eagerly: it reads the batch's largest row-sum norm back to Python to
choose one scale for every member, s = ceil(log2 max(norm, 1/2)) + 1, then adds Taylor
terms t_k = X t_(k-1) / k while the largest row-sum norm of the last term, read back to
Python after every product, is above 1e-8, and finally squares s times. Every read is a
host synchronisation, and the loop runs one dispatched operation at a time.

:func:`expm` is that loop in eager JAX (one dispatched ``jax.numpy`` operation at a
time, ``float()`` where the original calls ``.item()``), so that the benchmarks can show
the comparison the paper made (against this loop) beside the fair one (against
``jexpm.expm(method="baseline")``, the same series jitted into a ``lax.while_loop`` with
no host round trip). It is for the benchmarks only and runs forward only: its host
reads need concrete values, so it cannot be jitted or differentiated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

#: The published stopping threshold on a term's largest row-sum norm.
EPS = 1e-8


def _largest_row_sum(x: jax.Array) -> float:
    """The largest row sum of |x| over the batch, read back to the host."""
    return float(jnp.max(jnp.sum(jnp.abs(x), axis=-1)))


def expm(a: jax.Array) -> jax.Array:
    """e^A for (..., n, n) ``a`` by the published eager loop (see the module docstring)."""
    scale = math.ceil(math.log2(max(_largest_row_sum(a), 0.5))) + 1
    x = a / 2.0**scale
    total = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
    term, k = x, 2
    while _largest_row_sum(term) > EPS:
        total = total + term
        term = jnp.matmul(x, term) / k
        k += 1
    for _ in range(scale):
        total = jnp.matmul(total, total)
    return total


def looped(stack: jax.Array) -> jax.Array:
    """:func:`expm` of each member of a stack in turn, from Python (workload (f))."""
    return jnp.stack([expm(stack[i]) for i in range(stack.shape[0])])
