"""Derivative and batching rules around the approximants of _approximants.py.

Two differentiable operations, each with its rules written out below:

``approximate(approximant, tol, triangular, max_squarings, a)``
  returns (result, path, products). A ``jax.custom_jvp``: its tangent is the Frechet
  derivative ``frechet(a, da, path)`` of the approximant at the path it took, so
  forward mode (``jvp``, ``jacfwd``, ``linearize``) and reverse mode (``grad``, by JAX
  transposing that linear tangent) both differentiate exactly the computed function.
  Its batched implementation is wrapped in ``custom_vmap``, so that ``vmap`` costs what
  the batched call costs (one order for the batch, squarings per member) instead of
  running every branch for every member.

``frechet(a, e, path)``
  the primitive ``jexpm_frechet``, linear in ``e``, evaluated forward while carrying
  the direction (``jax.jvp`` through the path's evaluation: nothing is stored per
  squaring). Its rules:
  * transpose: for a polynomial p with real coefficients the transpose of
    E -> L_p(A, E) under JAX's pairing sum_ij X_ij Y_ij is G -> L_p(A^T, G) =
    L_p(A, G^T)^T, and every path's function is such a polynomial. So the reverse pass
    is one more forward Frechet evaluation at A: memory does not grow with s;
  * jvp: the block identity p([[A, E], [0, A]]) = [[p(A), L_p(A, E)], [0, p(A)]] makes
    the derivative of L_p(A, E) in (A, E) the top-right block of a Frechet derivative
    of twice the size, at the same path, so every order of derivative, in either mode,
    is again this primitive;
  * batching: the mapped axis becomes one more batch dimension.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import _algorithm as alg
from . import _tuning
from ._approximants import Approximant, Path

# ---------------------------------------------------------------------------------
# Slicing large batches

# Large batches are worked through in sequential slices (``lax.map``); each slice
# shares one order, each member keeps its squarings.
#  * On the CPU, slices of about CACHE_CHUNK_BYTES per matrix array keep the
#    polynomial's intermediates in cache. Float32 expm on a 2-core CPU, 1-norm 2:
#    65536x6x6 32 -> 10 ms, 16384x12x12 60 -> 23 ms, 4096x24x24 32 -> 10 ms.
#  * The Frechet derivative (the backward pass) also uses at least MEMORY_CHUNKS slices
#    for batches of MEMORY_CHUNK_MIN_BATCH or more, on any backend: its working set
#    (the polynomial and its tangent) shrinks accordingly; for (64, 48, 48) float32 the
#    compiled scratch memory fell from 13x to 3.5x the input, and the time did not rise.
# The values are the CPU's measured constants in _tuning.py (with the commands that
# regenerate them; docs/design.md, sections 5 and 6); CACHE_CHUNK_BYTES is only used
# on the CPU.
CACHE_CHUNK_BYTES = _tuning.CPU.cache_chunk_bytes
MEMORY_CHUNKS = _tuning.CPU.memory_chunks
MEMORY_CHUNK_MIN_BATCH = _tuning.CPU.memory_chunk_min_batch


def _chunk_count(x: jax.Array, batch: tuple[int, ...], for_memory: bool) -> int:
    """How many slices to cut the flattened batch of ``x`` into (a divisor of it)."""
    count = math.prod(batch)
    want = 1
    if jax.default_backend() == "cpu":
        per_member = math.prod(x.shape[len(batch) :]) * x.dtype.itemsize
        want = count // max(1, CACHE_CHUNK_BYTES // per_member)
    if for_memory and count >= MEMORY_CHUNK_MIN_BATCH:
        want = max(want, MEMORY_CHUNKS)
    return next(d for d in range(max(want, 1), 0, -1) if count % d == 0)


def in_chunks(fn, *args, for_memory: bool = False):
    """fn(*args) over the flattened batch in sequential slices (see above).

    ``args`` are (..., n, n) matrices or per-member (...) arrays sharing the batch shape
    of the first argument; ``fn`` returns a pytree of such arrays.
    """
    batch = args[0].shape[:-2]
    chunks = _chunk_count(args[0], batch, for_memory)
    if chunks == 1:
        return fn(*args)
    count = math.prod(batch)

    def split(x):
        return x.reshape((chunks, count // chunks, *x.shape[len(batch) :]))

    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in args))
    return jax.tree_util.tree_map(lambda y: y.reshape(*batch, *y.shape[2:]), out)


def _broadcast_batch(args, in_batched, axis_size: int) -> list:
    """Unbatched arguments broadcast along a new leading axis of ``axis_size``."""
    return [
        x if batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        for x, batched in zip(args, in_batched, strict=True)
    ]


def _mask_members(x: jax.Array, a: jax.Array, path: Path, max_squarings: int | None):
    """NaN for members with a non-finite entry or more squarings than allowed."""
    keep = alg.finite_member(alg.norm1(a))
    if max_squarings is not None:
        keep = keep & (path.squarings <= max_squarings)
    return alg.mask_nonfinite(x, keep)


# ---------------------------------------------------------------------------------
# The approximant, with a custom JVP and a batching rule


def _compute(approximant: Approximant, tol: float, triangular, max_squarings, a):
    """The batched computation: (result, path, products), in cache-sized slices."""
    compute = functools.partial(approximant.compute, tol=tol, triangular=triangular)
    result, path, products = in_chunks(compute, a)
    if max_squarings is not None:
        result = _mask_members(result, a, path, max_squarings)
    return result, path, products


def _compute_vmap_rule(statics, axis_size, in_batched, a):
    """Vmap of the computation: the mapped axis is one more batch dimension."""
    (a,) = _broadcast_batch([a], in_batched, axis_size)
    out = _vmappable_compute(*statics)(a)
    return out, jax.tree_util.tree_map(lambda _: True, out)


@functools.cache
def _vmappable_compute(approximant: Approximant, tol: float, triangular, max_squarings):
    statics = (approximant, tol, triangular, max_squarings)
    wrapped = custom_vmap(functools.partial(_compute, *statics))
    wrapped.def_vmap(functools.partial(_compute_vmap_rule, statics))
    return wrapped


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def approximate(approximant: Approximant, tol: float, triangular, max_squarings, a):
    """(result, path, products) of ``approximant`` at ``a``; see the module docstring.

    Args:
      approximant: the method and family.
      tol: truncation tolerance (a Python float).
      triangular: None (check on device), True or False: see ``Taylor.compute``.
      max_squarings: None, or members needing more squarings give NaN.
      a: (..., n, n) matrices in the working dtype.
    """
    return _vmappable_compute(approximant, tol, triangular, max_squarings)(a)


@approximate.defjvp
def _approximate_jvp(approximant, tol, triangular, max_squarings, primals, tangents):
    (a,), (da,) = primals, tangents
    result, path, products = approximate(approximant, tol, triangular, max_squarings, a)
    tangent = frechet(approximant, max_squarings, a, da, path)
    zeros = jax.tree_util.tree_map(_integer_tangent, (path, products))
    return (result, path, products), (tangent, *zeros)


def _integer_tangent(x: jax.Array) -> np.ndarray:
    return np.zeros(x.shape, jax.dtypes.float0)


# ---------------------------------------------------------------------------------
# The Frechet derivative as a primitive: implementation, jvp, transpose, batching


def _transpose(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _block(a: jax.Array, e: jax.Array) -> jax.Array:
    """[[A, E], [0, A]]."""
    zero = jnp.zeros_like(a)
    return jnp.concatenate(
        [jnp.concatenate([a, e], axis=-1), jnp.concatenate([zero, a], axis=-1)], axis=-2
    )


frechet_p = Primitive("jexpm_frechet")


def frechet(approximant: Approximant, max_squarings, a, e, path: Path) -> jax.Array:
    """L(a, e): the derivative of ``approximant.evaluate(., path)`` at ``a`` along ``e``."""
    return frechet_p.bind(a, e, *path, approximant=approximant, max_squarings=max_squarings)


def _frechet_slice(approximant, max_squarings, a, e, index, squarings):
    path = Path(index, squarings)
    _, tangent = jax.jvp(lambda x: approximant.evaluate(x, path), (a,), (e,))
    return _mask_members(tangent, a, path, max_squarings)


def _frechet_impl(a, e, index, squarings, *, approximant, max_squarings):
    slice_fn = functools.partial(_frechet_slice, approximant, max_squarings)
    return in_chunks(slice_fn, a, e, index, squarings, for_memory=True)


def _frechet_abstract_eval(a, e, index, squarings, **params):
    del a, index, squarings, params
    return jax.core.ShapedArray(e.shape, e.dtype)


def _frechet_jvp(primals, tangents, *, approximant, max_squarings):
    a, e, index, squarings = primals
    da, de = (ad.instantiate_zeros(t) for t in tangents[:2])
    path = Path(index, squarings)
    out = frechet(approximant, max_squarings, a, e, path)
    n = a.shape[-1]
    block = frechet(approximant, max_squarings, _block(a, e), _block(da, de), path)
    return out, block[..., :n, n:]


def _frechet_transpose(ct, a, e, index, squarings, *, approximant, max_squarings):
    if ad.is_undefined_primal(a):
        raise ValueError("jexpm_frechet is linear in its direction only")
    if type(ct) is ad.Zero:
        return None, ad.Zero(e.aval), None, None
    path = Path(index, squarings)
    # L(A^T, G) = L(A, G^T)^T: no transposed copy of A is needed.
    back = _transpose(frechet(approximant, max_squarings, a, _transpose(ct), path))
    return None, back, None, None


def _frechet_batch(args, dims, *, approximant, max_squarings):
    size = next(x.shape[d] for x, d in zip(args, dims, strict=True) if d is not None)
    args = [
        jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
        for x, d in zip(args, dims, strict=True)
    ]
    a, e, index, squarings = args
    return frechet(approximant, max_squarings, a, e, Path(index, squarings)), 0


frechet_p.def_impl(jax.jit(_frechet_impl, static_argnames=("approximant", "max_squarings")))
frechet_p.def_abstract_eval(_frechet_abstract_eval)
mlir.register_lowering(frechet_p, mlir.lower_fun(_frechet_impl, multiple_results=False))
ad.primitive_jvps[frechet_p] = _frechet_jvp
ad.primitive_transposes[frechet_p] = _frechet_transpose
batching.primitive_batchers[frechet_p] = _frechet_batch
