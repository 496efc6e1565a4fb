"""How jexpm works through batches: sequential slices, ordered slices, batching rules.

Shared by the exponential's derivative rules (_derivatives.py) and the action's
(_multiply.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from . import _tuning

# ---------------------------------------------------------------------------------
# Slicing large batches

# Large batches are worked through in sequential slices (``lax.map``); each member
# keeps its squarings.
#  * Where the backend's tuning asks for it (the CPU), slices of about
#    ``cache_chunk_bytes`` per matrix array keep the polynomial's intermediates in
#    cache.
#  * The Frechet derivative (the backward pass) also uses at least ``memory_chunks``
#    slices for batches of ``memory_chunk_min_batch`` or more: its working set (the
#    polynomial and its tangent) shrinks accordingly.
#  * Batches of at least ``sort_min_batch`` members (where the tuning sets one) are
#    first ordered by their members' 1-norms (the forward pass) or by their orders
#    and squarings (the derivative) and cut into at least ``sort_slices`` slices,
#    so that the members of a slice need about the same order and squarings; each
#    member is evaluated at its own order (``Taylor.compute(per_member=True)``,
#    ``by_member``; the keys are _derivatives.py's) and the results are put back in
#    place. Otherwise a slice shares the highest order any of its members needs and
#    squares to its largest s.
# The measured values and the commands that regenerate them are in _tuning.py
# (docs/design.md, sections 5 and 6).


def chunk_count(
    x: jax.Array,
    batch: tuple[int, ...],
    for_memory: bool,
    tuning: _tuning.Tuning | None = None,
    min_chunks: int = 1,
) -> int:
    """How many slices to cut the flattened batch of ``x`` into (a divisor of it).

    ``tuning`` defaults to the default backend's (``_tuning.for_backend()``).
    """
    tuning = tuning or _tuning.for_backend()
    count = math.prod(batch)
    want = min_chunks
    if tuning.cache_chunk_bytes:
        per_member = math.prod(x.shape[len(batch) :]) * x.dtype.itemsize
        want = count // max(1, tuning.cache_chunk_bytes // per_member)
    if for_memory and count >= tuning.memory_chunk_min_batch:
        want = max(want, tuning.memory_chunks)
    return next(d for d in range(max(want, 1), 0, -1) if count % d == 0)


def in_chunks(
    fn,
    *args,
    for_memory: bool = False,
    tuning: _tuning.Tuning | None = None,
    min_chunks: int = 1,
):
    """fn(*args) over the flattened batch in sequential slices (see above).

    ``args`` are (..., n, n) matrices or per-member (...) arrays sharing the batch shape
    of the first argument; ``fn`` returns a pytree of such arrays. ``tuning`` (static)
    slices as on another backend, e.g. ``_tuning.ACCELERATOR``: none for cache; default
    the default backend's. ``min_chunks``: at least this many slices (where the batch
    size has such a divisor).
    """
    batch = args[0].shape[:-2]
    chunks = chunk_count(args[0], batch, for_memory, tuning, min_chunks)
    if chunks == 1:
        return fn(*args)
    count = math.prod(batch)

    def split(x):
        return x.reshape((chunks, count // chunks, *x.shape[len(batch) :]))

    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in args))
    return jax.tree_util.tree_map(lambda y: y.reshape(*batch, *y.shape[2:]), out)


def permutation(key: jax.Array, bits: int) -> jax.Array:
    """Positions of the flat ``key`` (values below 2**bits) in ascending order."""
    count = key.shape[0]
    position = jax.lax.iota(jnp.int32, count)
    if count > 1 << (31 - bits):
        return jnp.argsort(key, stable=False).astype(jnp.int32)
    packed = jax.lax.sort((key << (31 - bits)) | position)
    return packed & ((1 << (31 - bits)) - 1)


def sorted_chunks(
    fn,
    key: jax.Array,
    bits: int,
    *args,
    for_memory: bool = False,
    tuning: _tuning.Tuning | None = None,
):
    """``in_chunks(fn, *args)`` with the members ordered by ``key`` first.

    ``key`` has the batch shape, values below 2**``bits``; the results come back in
    the members' original positions. ``tuning`` as in ``in_chunks``.
    """
    tuning = tuning or _tuning.for_backend()
    batch = args[0].shape[:-2]
    count = math.prod(batch)
    order = permutation(key.reshape(count), bits)
    back = (
        jnp.zeros(count, jnp.int32)
        .at[order]
        .set(jax.lax.iota(jnp.int32, count), unique_indices=True)
    )

    def gather(x, index):
        return x.reshape(count, *x.shape[len(batch) :])[index]

    out = in_chunks(
        fn,
        *(gather(x, order) for x in args),
        for_memory=for_memory,
        tuning=tuning,
        min_chunks=tuning.sort_slices,
    )
    return jax.tree_util.tree_map(lambda y: y[back].reshape(*batch, *y.shape[1:]), out)


# ---------------------------------------------------------------------------------
# Batching rules


def broadcast_batch(args, in_batched, axis_size: int) -> list:
    """Unbatched arguments broadcast along a new leading axis of ``axis_size``."""
    return [
        x if batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        for x, batched in zip(args, in_batched, strict=True)
    ]


def batch_rule(primitive):
    """The batching rule of a primitive whose every argument has the batch axes first.

    The mapped axis becomes one more leading batch axis (unmapped arguments are
    broadcast along it), so the primitive runs as its batched self.
    """

    def rule(args, dims, **params):
        size = next(x.shape[d] for x, d in zip(args, dims, strict=True) if d is not None)
        args = [
            jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
            for x, d in zip(args, dims, strict=True)
        ]
        out = primitive.bind(*args, **params)
        return out, ([0] * len(out) if primitive.multiple_results else 0)

    return rule
