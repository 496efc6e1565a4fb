"""expm of small matrices on GPUs in fused kernels, with no host round trips.

XLA:GPU runs a data-dependent ``cond`` by copying its index to the host and waiting, and
a ``while`` whose trip count is not static does the same on every iteration (openxla/xla,
``backends/gpu/runtime/conditional_thunk.cc`` and ``while_thunk.cc``). The XLA path of
_approximants.py branches on the data by design (orders, squarings, the triangular
check), so on a GPU each of its ``cond`` and loops is a round trip. For n x n batches with
n <= ``Tuning.kernel_max_n`` in float32 or float64 this module computes the same thing in
Pallas kernels (the Triton backend), each lane of a program one member's matrix
(_tile.py), every branch and loop inside the kernel:

  1. ``_norms_kernel``: per member ||A^j||_1 for the powers the selection reads, and
     whether A is upper triangular;
  2. between the kernels, branch-free XLA ops make the batch-wide choices of
     ``Taylor.compute`` from those norms with the same code (``Taylor.select``,
     ``order1``, ``refines``): the shared order, the squarings, the refinement and the
     exact band (for upper triangular input);
  3. ``_evaluate_kernel``: the refinement of s where the batch refines, the scaled
     polynomial, the member's own squarings (a loop to the tile's largest s, members
     that are done masked), the exact band for triangular input, NaN members;
  4. ``_frechet_kernel``: L(A, E) of the computed path (its ``jax.jvp`` inside the
     kernel), and the transpose L(A, G^T)^T, for ``jvp``, ``grad`` and ``vmap``.

So (m, s), ``ExpmInfo`` and the derivative rules are those of the XLA path; values agree
to rounding (products sum in another order). Members of different orders in one tile
(``vmap`` of derivatives, by-member paths) each get their own order, one branch per
order present in the tile. The transpose of a path that recomputed the triangular band
exactly is not a polynomial's: the kernel replays its squarings backwards, as the XLA
path does.

Why Triton rather than Mosaic GPU: one matrix per lane is elementwise code on 1-D
vectors with scalar control flow, which Triton expresses directly; it runs on every
CUDA GPU JAX supports (Colab's T4 included), not only on Hopper; and ``pallas_call``
for Mosaic GPU is deprecated in favour of its own kernel API.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from . import _algorithm as alg
from . import _tuning
from ._approximants import Approximant, Path, Taylor
from ._tile import Tile

#: Real dtypes the kernels compute in (Triton has no complex arithmetic).
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def covers(approximant: Approximant, a: jax.Array, tuning: _tuning.Tuning) -> bool:
    """Whether the kernels compute ``approximant`` for batches like ``a`` (static)."""
    return (
        approximant.fused
        and approximant.family == "exp"
        and np.dtype(a.dtype) in DTYPES
        and 1 <= a.shape[-1] <= tuning.kernel_max_n
        and math.prod(a.shape[:-2]) > 0
    )


def side(n: int) -> int:
    """N: n rounded up to a power of two (Triton's blocks have power-of-two sides)."""
    return 1 << (n - 1).bit_length()


def lanes(n: int) -> int:
    """Members per program: about 4096 matrix entries per tile."""
    return max(2, 4096 // side(n) ** 2)


# ---------------------------------------------------------------------------------
# Launching: (B, N, N) matrices, (k, B) per-member rows and (k,) scalars


def launch(body, n: int, count: int, inputs, outputs, interpret: bool):
    """pallas_call of ``body(*in_refs, *out_refs)`` over tiles of ``lanes(n)`` members.

    ``inputs``: (array, kind); ``outputs``: (ShapeDtypeStruct, kind), with kind one of
    "matrix" (B, N, N), "rows" (k, B) and "scalars" (k,). A batch that is not a whole
    number of tiles is padded with zero matrices (they need no squaring) and cut off
    the results.
    """
    lane_count = lanes(n)
    padded = pl.cdiv(count, lane_count) * lane_count
    axis = {"matrix": 0, "rows": 1}

    def spec(shape, kind):
        if kind == "matrix":
            return pl.BlockSpec((lane_count, *shape[1:]), lambda i: (i, 0, 0))
        if kind == "rows":
            return pl.BlockSpec((shape[0], lane_count), lambda i: (0, i))
        return pl.BlockSpec(shape, lambda i: (0,))

    def pad(x, kind):
        if kind not in axis or padded == count:
            return x
        widths = [(0, 0)] * x.ndim
        widths[axis[kind]] = (0, padded - count)
        return jnp.pad(x, widths)

    def grow(shape_dtype, kind):
        shape = list(shape_dtype.shape)
        if kind in axis:
            shape[axis[kind]] = padded
        return jax.ShapeDtypeStruct(tuple(shape), shape_dtype.dtype)

    def cut(y, kind):
        if kind not in axis or padded == count:
            return y
        return lax.slice_in_dim(y, 0, count, axis=axis[kind])

    outs = pl.pallas_call(
        body,
        grid=(padded // lane_count,),
        in_specs=[spec(x.shape, kind) for x, kind in inputs],
        out_specs=[spec(s.shape, kind) for s, kind in outputs],
        out_shape=[grow(s, kind) for s, kind in outputs],
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=1),
        interpret=interpret,
    )(*(pad(x, kind) for x, kind in inputs))
    return [cut(y, kind) for y, (_, kind) in zip(outs, outputs, strict=True)]


def blocks(a: jax.Array) -> jax.Array:
    """(..., n, k) -> (B, side(n), side(k)), zero-padded: matrices, or the blocks they act on."""
    n, k = a.shape[-2:]
    flat = a.reshape(-1, n, k)
    widths = ((0, 0), (0, side(n) - n), (0, side(k) - k))
    return flat if (side(n), side(k)) == (n, k) else jnp.pad(flat, widths)


def unblock(x: jax.Array, shape) -> jax.Array:
    """The inverse of :func:`blocks` for arrays of ``shape``."""
    return x[:, : shape[-2], : shape[-1]].reshape(shape)


def _row(ref, row: int) -> jax.Array:
    return ref[row, :]


def any_lane(mask: jax.Array) -> jax.Array:
    """Scalar: whether any lane is set (Triton reduces by max, not by or)."""
    return jnp.max(mask.astype(jnp.int32)) > 0


# ---------------------------------------------------------------------------------
# The computations of one tile, as functions of Tiles


def _by_member(index: jax.Array, branches, operands) -> Tile:
    """``branches[index](operands)`` per lane: one branch per order present in the tile."""
    out = jax.eval_shape(branches[0], operands)
    out = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out)
    for i, branch in enumerate(branches):
        here = index == i

        def take(out, branch=branch, here=here):
            return branch(operands).where(here, out)

        out = lax.cond(any_lane(here), take, lambda out: out, out)
    return out


def _branches(approximant: Taylor):
    """The formulas of every order, called on the powers (X, X2) (tiles or arrays)."""

    def order1(powers):
        return approximant.first(powers[0])

    def higher(f):
        return lambda powers: f(powers, lambda x, y: x @ y)

    return [order1, *(higher(f) for f in approximant.formulas)]


def _square(t: Tile, s: jax.Array) -> Tile:
    """T squared s times per lane: one loop to the tile's largest s."""

    def body(i, t):
        return (t @ t).where(i < s, t)

    return lax.fori_loop(0, jnp.max(s), body, t)


def _triangular_step(t: Tile, a: Tile, s: jax.Array):
    """Step j of ``alg.square_triangular`` on a tile, for j = -1, 0, ..., max(s) - 1."""

    def step(j, x):
        squared = (x @ x).where(jnp.broadcast_to(j >= 0, s.shape), t)
        return squared.with_band(a.band_values(s - j - 1)).where(j < s, x)

    return step


def _square_triangular(t: Tile, a: Tile, s: jax.Array) -> Tile:
    """``alg.square_triangular`` on a tile: the exact band of exp(2^-k A) at every step."""
    return lax.fori_loop(-1, jnp.max(s), _triangular_step(t, a, s), t)


def _polynomial(approximant: Taylor, x: Tile, index: jax.Array) -> Tile:
    """T_m(X) per lane, each at the order of its ``index``."""
    return _by_member(index, _branches(approximant), (x, x @ x))


def _plain(approximant: Taylor, a: Tile, index: jax.Array, s: jax.Array) -> Tile:
    """T_m(2^-s A) squared s times (``Taylor._plain``)."""
    return _square(_polynomial(approximant, a.scale(s), index), s)


def _with_band(approximant: Taylor, a: Tile, index, s, exact_band, result: Tile, change) -> Tile:
    """``result`` plus, in the lanes of exact-band paths, ``change(upper, x, t, result)``.

    ``upper`` is A's upper triangle, ``x`` its scaled form and ``t`` = T_m(x): what
    ``Taylor.evaluate`` and ``Taylor.transpose`` add for the exact band.
    """
    if not approximant.exact_band:
        return result

    def with_band(result):
        upper = a.upper()
        x = upper.scale(s)
        t = _polynomial(approximant, x, index)
        delta = change(upper, x, t, result)
        return result + delta.where(exact_band, delta * 0.0)

    return lax.cond(any_lane(exact_band), with_band, lambda result: result, result)


def _evaluate(approximant: Taylor, a: Tile, index, s, exact_band) -> Tile:
    """``Taylor.evaluate`` at depth 0 on a tile: what the derivative rules differentiate."""

    def change(upper, x, t, result):
        return _square_triangular(t, upper, s) - _square(t, s)

    result = _plain(approximant, a, index, s)
    return _with_band(approximant, a, index, s, exact_band, result, change)


def _square_triangular_transpose(t: Tile, a: Tile, s: jax.Array, g: Tile) -> tuple[Tile, Tile]:
    """``alg.square_triangular_transpose`` on a tile: (cotangent of T, of A).

    The steps run backwards; each X_j is formed again from T rather than stored, so
    the kernel keeps a few matrices whatever s.
    """
    top = jnp.max(s)
    step = _triangular_step(t, a, s)

    def body(i, carry):
        g, g_a = carry
        j = top - 1 - i
        active = j < s
        _, pullback = jax.vjp(lambda a: a.band_values(jnp.maximum(s - j - 1, 0)), a)
        (da,) = pullback(g.band())
        h = g.off_band()
        x = lax.fori_loop(-1, j, step, t)
        xt = x.T
        g_x = (h @ xt + xt @ h).where(jnp.broadcast_to(j >= 0, s.shape), h)
        return g_x.where(active, g), g_a + da.where(active, da * 0.0)

    return lax.fori_loop(0, top + 1, body, (g, a * 0.0))


def _transpose(approximant: Taylor, a: Tile, g: Tile, index, s, exact_band) -> Tile:
    """``Taylor.transpose`` at depth 0 on a tile: L*(A, G).

    The polynomial part is L(A, G^T)^T, one more forward evaluation; paths that
    recomputed the band run its squarings backwards (``_square_triangular_transpose``).
    """
    _, forward = jax.jvp(lambda a: _plain(approximant, a, index, s), (a,), (g.T,))

    def change(upper, x, t, result):
        g_t, g_a = _square_triangular_transpose(t, upper, s, g)
        _, g_x = jax.jvp(lambda x: _polynomial(approximant, x, index), (x,), (g_t.T,))
        return (g_a + g_x.T.scale(s) - result).upper()

    return _with_band(approximant, a, index, s, exact_band, forward.T, change)


def _keep(finite: jax.Array, s: jax.Array, max_squarings: int | None) -> jax.Array:
    """Lanes whose result stands: finite input and no more squarings than allowed."""
    return finite if max_squarings is None else finite & (s <= max_squarings)


def _nan_where_not(keep: jax.Array, tile: Tile) -> Tile:
    return Tile(jnp.where(keep[:, None, None], tile.x, jnp.nan), tile.n)


# ---------------------------------------------------------------------------------
# The kernels


def _norms_kernel(n: int, powers: int, a_ref, norms_ref, upper_ref):
    """||A^j||_1 for j = 1..``powers`` (rows of ``norms_ref``) and upper-triangularity."""
    a = Tile(a_ref[...], n)
    power = a
    for j in range(powers):
        if j:
            power = power @ a
        norms_ref[j, :] = power.norm1()
    upper_ref[0, :] = a.is_upper().astype(jnp.int32)


def _evaluate_kernel(
    approximant: Taylor,
    log2_tol: float,
    max_squarings,
    n: int,
    a_ref,
    members_ref,
    logs_ref,
    flags_ref,
    out_ref,
    s_out_ref,
):
    """The computation of ``Taylor.compute`` after its selection, for one tile.

    ``members_ref`` rows: the squarings and whether A is finite (as the selection
    decided it, from the norms kernel's 1-norms). ``flags_ref``: the batch's order
    index, whether it refines s, whether it squares with the exact band.
    """
    a = Tile(a_ref[...], n)
    s, finite = _row(members_ref, 0), _row(members_ref, 1) > 0
    l1, l2 = _row(logs_ref, 0), _row(logs_ref, 1)
    index, refine, exact_band = flags_ref[0], flags_ref[1], flags_ref[2]

    def refined():
        a2 = a @ a
        a8 = (a2 @ a2) @ (a2 @ a2)
        return alg.refined(
            approximant.orders,
            approximant.log2_b,
            l1,
            l2,
            a8.norm1(),
            (a8 @ a).norm1(),
            s,
            log2_tol,
        )

    s = lax.cond(refine > 0, refined, lambda: s)
    x = a.scale(s)
    t = lax.switch(index, _branches(approximant), (x, x @ x))
    if approximant.exact_band:
        t = lax.cond(exact_band > 0, lambda: _square_triangular(t, a, s), lambda: _square(t, s))
    else:
        t = _square(t, s)
    out_ref[...] = _nan_where_not(_keep(finite, s, max_squarings), t).x.astype(out_ref.dtype)
    s_out_ref[0, :] = s


def _frechet_kernel(
    approximant: Taylor,
    max_squarings,
    transposed: bool,
    n: int,
    a_ref,
    e_ref,
    path_ref,
    out_ref,
):
    """L(A, E) of a path, or with ``transposed`` its transpose L*(A, E).

    ``path_ref`` rows: order index, squarings, exact band.
    """
    a, e = Tile(a_ref[...], n), Tile(e_ref[...], n)
    index, s, exact_band = (_row(path_ref, r) for r in range(3))
    exact_band = exact_band > 0
    if transposed:
        tangent = _transpose(approximant, a, e, index, s, exact_band)
    else:
        _, tangent = jax.jvp(lambda a: _evaluate(approximant, a, index, s, exact_band), (a,), (e,))
    # Finiteness is decided again from the tile: this kernel runs in the derivative's
    # program, where the computation's is not at hand. By the 1-norm, as
    # _derivatives.py decides it, so that a finite A whose norm overflows gives NaN
    # here as well.
    keep = _keep(alg.finite_member(a.norm1()), s, max_squarings)
    out_ref[...] = _nan_where_not(keep, tangent).x.astype(out_ref.dtype)


# ---------------------------------------------------------------------------------
# The computations on whole batches


def compute(
    approximant: Taylor,
    tol: float,
    upper_triangular: bool | None,
    max_squarings: int | None,
    a: jax.Array,
    interpret: bool = False,
):
    """``Taylor.compute`` of the batch ``a``, then the ``max_squarings`` mask, in kernels.

    Returns (result, path, products) as the XLA path (``_derivatives._compute``) does.
    """
    batch, n = a.shape[:-2], a.shape[-1]
    count = math.prod(batch)
    a_blocks = blocks(a)
    log2_tol = math.log2(tol)
    powers = max(approximant.stored)
    real = alg.real_dtype(a)
    norms, upper = launch(
        functools.partial(_norms_kernel, n, powers),
        n,
        count,
        [(a_blocks, "matrix")],
        [
            (jax.ShapeDtypeStruct((powers, count), real), "rows"),
            (jax.ShapeDtypeStruct((1, count), jnp.int32), "rows"),
        ],
        interpret,
    )

    # The batch's choices, as Taylor.compute makes them, without a branch.
    l1 = jnp.log2(norms[0])
    finite = alg.finite_member(l1)
    only_first = alg.batch_all(approximant.order1(l1, log2_tol), finite)
    index, s, _, formed, overflow, l2 = approximant.select(
        l1, norms[1], finite, log2_tol, lambda j, need, previous: (None, norms[j - 1])
    )
    index = jnp.where(only_first, 0, jnp.max(index, initial=1))
    s = jnp.where(only_first, 0, s)
    refine = ~only_first & approximant.refines(l1, l2, s)
    # Taylor.compute bands (and reforms overflowed powers) only where some member is
    # scaled; it decides so after the refinement, which can in principle take every
    # s to 0 (then this path bands where the XLA path does not: both are exact there).
    scaled = ~only_first & jnp.any(s > 0)
    if not approximant.exact_band:
        exact_band = jnp.bool_(False)
    elif upper_triangular:
        exact_band = scaled
    else:
        exact_band = scaled & alg.batch_all(upper[0] > 0, finite)
    redo = scaled & jnp.any(overflow & finite)
    flags = jnp.stack([x.astype(jnp.int32) for x in (index, refine, exact_band, redo)])

    result, s = launch(
        functools.partial(_evaluate_kernel, approximant, log2_tol, max_squarings, n),
        n,
        count,
        [
            (a_blocks, "matrix"),
            (jnp.stack([s, finite.astype(jnp.int32)]), "rows"),
            (jnp.stack([l1, l2]), "rows"),
            (flags, "scalars"),
        ],
        [
            (jax.ShapeDtypeStruct(a_blocks.shape, a.dtype), "matrix"),
            (jax.ShapeDtypeStruct((1, count), jnp.int32), "rows"),
        ],
        interpret,
    )
    again = 1 + sum(f.astype(jnp.int32) for f in formed)
    products = jnp.where(
        only_first,
        0,
        jnp.asarray(approximant.products, jnp.int32)[index]
        + alg.squaring_products(approximant.family) * s[0]
        + redo.astype(jnp.int32) * again
        + alg.REFINE_PRODUCTS * refine.astype(jnp.int32),
    )
    path = Path(
        jnp.broadcast_to(index, batch).astype(jnp.int32),
        s[0].reshape(batch),
        jnp.broadcast_to(exact_band, batch),
    )
    return unblock(result, a.shape), path, products.reshape(batch)


def frechet(
    approximant: Taylor,
    max_squarings: int | None,
    transposed: bool,
    a: jax.Array,
    e: jax.Array,
    path: Path,
    interpret: bool = False,
) -> jax.Array:
    """L(a, e) of ``path`` (or with ``transposed`` its transpose) in one kernel."""
    batch, n = a.shape[:-2], a.shape[-1]
    count = math.prod(batch)
    rows = jnp.stack(
        [
            path.index.astype(jnp.int32).reshape(count),
            path.squarings.astype(jnp.int32).reshape(count),
            path.exact_band.astype(jnp.int32).reshape(count),
        ]
    )
    (out,) = launch(
        functools.partial(_frechet_kernel, approximant, max_squarings, transposed, n),
        n,
        count,
        [(blocks(a), "matrix"), (blocks(e), "matrix"), (rows, "rows")],
        [(jax.ShapeDtypeStruct((count, side(n), side(n)), e.dtype), "matrix")],
        interpret,
    )
    return unblock(out, e.shape)
