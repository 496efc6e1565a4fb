"""Derivative and batching rules around the batched algorithm of _algorithm.py.

Layout (SPEC 6): ``jax.custom_vjp`` outermost; the forward, the fixed-(order, s)
evaluation and the Frechet derivative are each wrapped in ``custom_vmap`` whose rule
simply calls the batched implementation with the mapped axis as one more batch
dimension. So ``vmap`` costs what the batched call costs (one order for the batch,
per-member squarings) instead of running every branch, and ``grad``, ``vmap(grad)``,
``grad(vmap)`` and ``vmap(vmap)`` all compose.

Derivative. The forward returns the order index and squarings it used. For a
polynomial p with real coefficients, the transpose of E -> L_p(A, E) with respect to
sum_ij X_ij Y_ij (JAX's cotangent pairing) is E -> L_p(A^T, E) = L_p(A, E^T)^T, and
the computed approximant (T_m(A / 2^s))^(2^s) is such a polynomial. The backward pass
therefore runs the same (m, s) evaluation forward at A while carrying the direction
G^T (``jax.jvp`` through the loop): nothing is stored per squaring.

Higher derivatives. The Frechet derivative is itself given a VJP through the block
identity p([[A, E], [0, A]]) = [[p(A), L_p(A, E)], [0, p(A)]] with the same (m, s),
whose own derivative is again a Frechet derivative, so ``grad`` of ``grad`` works to
any order (each order doubles the matrix size once).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from . import _algorithm as alg
from ._schemes import SCHEMES


def _transpose(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _vmap_as_batch(fn):
    """custom_vmap whose rule treats the mapped axis (axis 0) as a batch dimension."""
    wrapped = custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        args = [
            x if batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
            for x, batched in zip(args, in_batched, strict=True)
        ]
        out = wrapped(*args)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return wrapped


# Large batches are worked through in sequential slices (``lax.map``); each slice
# shares one order, each member keeps its squarings.
#  * On the CPU, slices of about CACHE_CHUNK_BYTES per matrix array keep the
#    polynomial's intermediates in cache. Float32 expm on a 2-core CPU, 1-norm 2:
#    65536x6x6 32 -> 10 ms, 16384x12x12 60 -> 23 ms, 4096x24x24 32 -> 10 ms.
#  * The Frechet derivative (the backward pass) also uses at least MEMORY_CHUNKS slices
#    for batches of MEMORY_CHUNK_MIN_BATCH or more, on any backend: its working set
#    (the polynomial and its tangent) shrinks accordingly; for (64, 48, 48) float32 the
#    compiled scratch memory fell from 13x to 3.5x the input, and the time did not rise.
CACHE_CHUNK_BYTES = 1 << 20
MEMORY_CHUNKS = 4
MEMORY_CHUNK_MIN_BATCH = 8


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


def _in_chunks(fn, *args, for_memory: bool = False):
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


def _block(a: jax.Array, e: jax.Array) -> jax.Array:
    zero = jnp.zeros_like(a)
    return jnp.concatenate(
        [jnp.concatenate([a, e], axis=-1), jnp.concatenate([zero, a], axis=-1)], axis=-2
    )


class Kernel:
    """The differentiable, vmappable functions of one (method, family, tol)."""

    def __init__(self, method: str, family: str, tol: float):
        if method == "baseline":
            forward_impl = functools.partial(alg.forward_baseline, family, tol=tol)
            evaluate_impl = functools.partial(alg.evaluate_baseline, family)
        else:
            scheme = SCHEMES[method, family]
            forward_impl = functools.partial(alg.forward, scheme, log2_tol=math.log2(tol))
            evaluate_impl = functools.partial(alg.evaluate, scheme)

        def frechet_chunk(a, e, index, s):
            _, tangent = jax.jvp(lambda x: evaluate_impl(x, index, s), (a,), (e,))
            finite = alg.norm1(a) < jnp.inf
            return jnp.where(finite[..., None, None], tangent, jnp.nan)

        def frechet_impl(a, e, index, s):
            return _in_chunks(frechet_chunk, a, e, index, s, for_memory=True)

        forward = _vmap_as_batch(functools.partial(_in_chunks, forward_impl))
        evaluate = _vmap_as_batch(evaluate_impl)
        frechet = _vmap_as_batch(frechet_impl)

        @jax.custom_vjp
        def evaluate_d(a, index, s):
            return evaluate(a, index, s)

        @jax.custom_vjp
        def frechet_d(a, e, index, s):
            return frechet(a, e, index, s)

        @jax.custom_vjp
        def forward_d(a):
            return forward(a)

        # The fwd rules call the differentiable functions themselves, so that an outer
        # derivative (grad of grad) sees their custom rules too.
        def evaluate_fwd(a, index, s):
            return evaluate_d(a, index, s), (a, index, s)

        def evaluate_bwd(res, g):
            a, index, s = res
            return _transposed_frechet(a, g, index, s), None, None

        def frechet_fwd(a, e, index, s):
            return frechet_d(a, e, index, s), (a, e, index, s)

        def frechet_bwd(res, g):
            a, e, index, s = res
            n = a.shape[-1]

            def via_block(a, e):
                return evaluate_d(_block(a, e), index, s)[..., :n, n:]

            _, vjp = jax.vjp(via_block, a, e)
            return (*vjp(g), None, None)

        def forward_fwd(a):
            out = forward_d(a)
            return out, (a, out[1], out[2])

        def forward_bwd(res, g):
            a, index, s = res
            return (_transposed_frechet(a, g[0], index, s),)

        def _transposed_frechet(a, g, index, s):
            # L(A^T, G) = L(A, G^T)^T: no transposed copy of A is needed.
            return _transpose(frechet_d(a, _transpose(g), index, s))

        evaluate_d.defvjp(evaluate_fwd, evaluate_bwd)
        frechet_d.defvjp(frechet_fwd, frechet_bwd)
        forward_d.defvjp(forward_fwd, forward_bwd)
        self.forward = forward_d
        self.frechet = frechet_d


@functools.cache
def kernel(method: str, family: str, tol: float) -> Kernel:
    """The (cached) kernel for one method, family and tolerance."""
    return Kernel(method, family, tol)
