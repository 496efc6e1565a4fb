"""Derivative and batching rules around the approximants of _approximants.py.

Two differentiable operations, each with its rules written out below:

``approximate(approximant, tol, upper_triangular, max_squarings, a)``
  returns (result, path, products). A ``jax.custom_jvp``: its tangent is the Frechet
  derivative ``frechet(a, da, path)`` of the approximant at the path it took, so
  forward mode (``jvp``, ``jacfwd``, ``linearize``) and reverse mode (``grad``, by JAX
  transposing that linear tangent) both differentiate exactly the computed function.
  Its batched implementation is wrapped in ``custom_vmap``, so that ``vmap`` costs what
  the batched call costs (one order for the batch, squarings per member) instead of
  running every branch for every member.

``frechet(a, e, path, depth=0, transposed=False)``
  the primitive ``jexpm_frechet``, linear in ``e``: the derivative L(A, E) of the
  path's function (``approximant.evaluate``), or with ``transposed`` its transpose
  L*(A, G) (``approximant.transpose``). Both run forward: the derivative carries the
  direction through the evaluation (``jax.jvp``), and for a polynomial with real
  coefficients the transpose under JAX's pairing sum_ij X_ij Y_ij is
  L*(A, G) = L(A^T, G) = L(A, G^T)^T, one more forward evaluation, so reverse mode
  stores nothing per squaring. (Paths that recomputed the triangular band exactly are
  not polynomials; their transpose replays the squarings backwards.) Its rules:
  * transpose: ``transposed`` flips, at the same point;
  * jvp: every path's function f maps the block matrix [[A, E], [0, A]] to
    [[f(A), L(A, E)], [0, f(A)]] (``depth`` counts the nesting), so the derivative
    of L(A, E) in (A, E) is the top-right block of L at ([[A, dA], [0, A]],
    [[E, dE], [0, E]]), and that of L*(A, G) the sum of the diagonal blocks of L* at
    ([[A, dA], [0, A]], [[dG, G], [0, 0]]): every order of derivative, in either mode,
    is again this primitive;
  * batching: the mapped axis becomes one more batch dimension.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.custom_batching import custom_vmap
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import _algorithm as alg
from . import _batching, _kernel, _tuning
from ._approximants import Approximant, Path

# ---------------------------------------------------------------------------------
# Ordering large batches (the slicing itself is _batching.py's)

# Sort keys are packed with the member's position into one int32, which one
# single-operand sort orders (several times faster on the CPU than ``argsort``'s
# two-operand sort, 3 ms against 12 ms for 65536 keys).
_NORM_KEY_BITS = 6  # log2 of the 1-norm, in half bits, over [-16, 16)
_PATH_KEY_BITS = 8  # order index (3 bits) and squarings capped at 31 (5 bits)


def norm_key(a: jax.Array) -> jax.Array:
    """Per-member sort key of the forward pass: log2 ||A||_1 in half bits, clipped."""
    top = (1 << _NORM_KEY_BITS) - 1
    half_bits = jnp.floor(2 * (jnp.log2(alg.norm1(a)) + 16))
    return jnp.where(half_bits < top, jnp.clip(half_bits, 0, top), top).astype(jnp.int32)


def path_key(path: Path) -> jax.Array:
    """Per-member sort key of the derivative: order index, then squarings."""
    return path.index.astype(jnp.int32) * 32 + jnp.minimum(path.squarings, 31)


def _sorts(approximant: Approximant, a: jax.Array) -> bool:
    """Whether a batch like ``a`` is ordered before slicing (see above)."""
    minimum = (approximant.tuning or _tuning.for_backend()).sort_min_batch
    return approximant.member_orders and bool(minimum) and math.prod(a.shape[:-2]) >= minimum


def _mask_members(x: jax.Array, finite: jax.Array | None, path: Path, max_squarings: int | None):
    """NaN for members with more squarings than allowed, and where ``finite`` is False.

    ``finite`` None: ``x`` already holds NaN for the members with a non-finite entry.
    """
    keep = finite
    if max_squarings is not None:
        allowed = path.squarings <= max_squarings
        keep = allowed if keep is None else keep & allowed
    return x if keep is None else alg.mask_nonfinite(x, keep)


# ---------------------------------------------------------------------------------
# The approximant, with a custom JVP and a batching rule


def _compute(approximant: Approximant, tol: float, upper_triangular, max_squarings, a):
    """The batched computation: (result, path, products).

    In programs lowered for CUDA GPUs, batches the fused kernels cover run there
    (``_kernel.compute``); elsewhere the XLA path, in cache-sized slices.
    """
    statics = (approximant, tol, upper_triangular, max_squarings)
    if _kernel.covers(approximant, a, _tuning.GPU):
        return lax.platform_dependent(
            a,
            cuda=functools.partial(_kernel.compute, *statics),
            default=functools.partial(_compute_xla, *statics),
        )
    return _compute_xla(*statics, a)


def _compute_xla(approximant: Approximant, tol: float, upper_triangular, max_squarings, a):
    compute = functools.partial(approximant.compute, tol=tol)
    if approximant.exact_band:
        compute = functools.partial(compute, upper_triangular=upper_triangular)
    tuning = approximant.tuning
    if _sorts(approximant, a):
        compute = functools.partial(compute, per_member=True)
        result, path, products = _batching.sorted_chunks(
            compute, norm_key(a), _NORM_KEY_BITS, a, tuning=tuning
        )
    else:
        result, path, products = _batching.in_chunks(compute, a, tuning=tuning)
    # ``compute`` has made the members with a non-finite entry NaN already.
    result = _mask_members(result, None, path, max_squarings)
    return result, path, products


def _compute_vmap_rule(statics, axis_size, in_batched, a):
    """Vmap of the computation: the mapped axis is one more batch dimension."""
    (a,) = _batching.broadcast_batch([a], in_batched, axis_size)
    out = _vmappable_compute(*statics)(a)
    return out, jax.tree_util.tree_map(lambda _: True, out)


@functools.cache
def _vmappable_compute(approximant: Approximant, tol: float, upper_triangular, max_squarings):
    statics = (approximant, tol, upper_triangular, max_squarings)
    wrapped = custom_vmap(functools.partial(_compute, *statics))
    wrapped.def_vmap(functools.partial(_compute_vmap_rule, statics))
    return wrapped


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def approximate(approximant: Approximant, tol: float, upper_triangular, max_squarings, a):
    """(result, path, products) of ``approximant`` at ``a``; see the module docstring.

    Args:
      approximant: the method and family.
      tol: truncation tolerance (a Python float).
      upper_triangular: None (check on device) or True (promised): see
        ``Taylor.compute``.
      max_squarings: None, or members needing more squarings give NaN.
      a: (..., n, n) matrices in the working dtype.
    """
    return _vmappable_compute(approximant, tol, upper_triangular, max_squarings)(a)


@approximate.defjvp
def _approximate_jvp(approximant, tol, upper_triangular, max_squarings, primals, tangents):
    (a,), (da,) = primals, tangents
    result, path, products = approximate(approximant, tol, upper_triangular, max_squarings, a)
    tangent = frechet(approximant, max_squarings, a, da, path)
    zeros = jax.tree_util.tree_map(_integer_tangent, (path, products))
    return (result, path, products), (tangent, *zeros)


def _integer_tangent(x: jax.Array) -> np.ndarray:
    return np.zeros(x.shape, jax.dtypes.float0)


# ---------------------------------------------------------------------------------
# The Frechet derivative as a primitive: implementation, jvp, transpose, batching


frechet_p = Primitive("jexpm_frechet")


def frechet(
    approximant: Approximant,
    max_squarings,
    a,
    e,
    path: Path,
    *,
    depth: int = 0,
    transposed: bool = False,
) -> jax.Array:
    """L(a, e), the derivative of ``approximant.evaluate(., path, depth)`` at ``a`` along ``e``.

    With ``transposed``, its transpose applied to ``e``.
    """
    return frechet_p.bind(
        a,
        e,
        *path,
        approximant=approximant,
        max_squarings=max_squarings,
        depth=depth,
        transposed=transposed,
    )


def _frechet_slice(approximant, max_squarings, depth, transposed, a, e, *path):
    path = Path(*path)
    if transposed:
        out = approximant.transpose(a, e, path, depth)
    else:
        _, out = jax.jvp(lambda x: approximant.evaluate(x, path, depth), (a,), (e,))
    # Finiteness is decided again here: this primitive is a program of its own, run at
    # the points the derivative rules choose (at ``depth`` > 0 the block matrices
    # [[A, E], [0, A]], whose finiteness includes that of the direction E).
    return _mask_members(out, alg.finite_member(alg.norm1(a)), path, max_squarings)


def _frechet_impl(a, e, *path, approximant, max_squarings, depth, transposed):
    """L (or L*) of the path: in the fused kernel in programs for CUDA GPUs (depth 0)."""
    statics = dict(approximant=approximant, max_squarings=max_squarings, depth=depth)
    xla = functools.partial(_frechet_xla, **statics, transposed=transposed)
    if depth or not _kernel.covers(approximant, a, _tuning.GPU):
        return xla(a, e, *path)

    def kernel(a, e, *path):
        return _kernel.frechet(approximant, max_squarings, transposed, a, e, Path(*path))

    return lax.platform_dependent(a, e, *path, cuda=kernel, default=xla)


def _frechet_xla(a, e, *path, approximant, max_squarings, depth, transposed):
    slice_fn = functools.partial(_frechet_slice, approximant, max_squarings, depth, transposed)
    tuning = approximant.tuning
    if _sorts(approximant, a):
        key = path_key(Path(*path))
        return _batching.sorted_chunks(
            slice_fn, key, _PATH_KEY_BITS, a, e, *path, for_memory=True, tuning=tuning
        )
    return _batching.in_chunks(slice_fn, a, e, *path, for_memory=True, tuning=tuning)


def _frechet_abstract_eval(a, e, *path, approximant, transposed, **params):
    """L(A, E) has the result's shape; L*(A, G) and H(A, G, X) have A's."""
    del path, params
    shape = a.shape if transposed else approximant.result_shape(a.shape)
    return ShapedArray(shape, e.dtype)


def _hessian_abstract_eval(a, g, x, *path, **params):
    del a, g, path, params
    return ShapedArray(x.shape, x.dtype)


def _corner(g: jax.Array) -> jax.Array:
    """[[0, G], [0, 0]]."""
    top = jnp.concatenate([jnp.zeros_like(g), g], axis=-1)
    return jnp.concatenate([top, jnp.zeros_like(top)], axis=-2)


def _diagonal_blocks(x: jax.Array) -> jax.Array:
    n = x.shape[-1] // 2
    return x[..., :n, :n] + x[..., n:, n:]


def _frechet_jvp(primals, tangents, *, approximant, max_squarings, depth, transposed):
    a, e, *path = primals
    da, de = (ad.instantiate_zeros(t) for t in tangents[:2])
    path = Path(*path)
    same = functools.partial(frechet, approximant, max_squarings, depth=depth)
    out = same(a, e, path, transposed=transposed)
    if transposed:
        # d L*(A, G) = L*(A, dG) + H(A, G, dA).
        return out, same(a, de, path, transposed=True) + hessian(
            approximant, max_squarings, a, e, da, path, depth=depth
        )
    # d L(A, E) = top-right block of L([[A, E], [0, A]], [[dA, dE], [0, dA]]).
    n = a.shape[-1]
    lifted = frechet(
        approximant,
        max_squarings,
        alg.block_upper(a, e),
        alg.block_upper(da, de),
        path,
        depth=depth + 1,
    )
    return out, lifted[..., :n, n:]


def _frechet_transpose(ct, a, e, *path, approximant, max_squarings, depth, transposed):
    if ad.is_undefined_primal(a):
        raise ValueError("jexpm_frechet is linear in its direction only")
    nones = (None,) * len(path)
    if type(ct) is ad.Zero:
        return None, ad.Zero(e.aval), *nones
    back = frechet(
        approximant, max_squarings, a, ct, Path(*path), depth=depth, transposed=not transposed
    )
    return None, back, *nones


# ---------------------------------------------------------------------------------
# The derivative of the transpose: H(A, G, X) = d/dA L*(A, G) along X, the Hessian of
# A -> <f(A), G> applied to X. JAX needs it as a primitive linear in X (and in G):
# the block form below would put X into the point at which L* is evaluated.

hessian_p = Primitive("jexpm_frechet_hessian")


def hessian(approximant: Approximant, max_squarings, a, g, x, path: Path, *, depth: int = 0):
    """H(a, g, x): the derivative of L*(a, g) in a along x (symmetric in x)."""
    return hessian_p.bind(
        a, g, x, *path, approximant=approximant, max_squarings=max_squarings, depth=depth
    )


def _hessian_impl(a, g, x, *path, approximant, max_squarings, depth):
    # Pair L*([[A, X], [0, A]], [[0, G], [0, 0]]) with [[E, 0], [0, E]]: the diagonal
    # blocks hold the derivative of <L(A, E), G> = <E, L*(A, G)> in A along X.
    lifted = frechet(
        approximant,
        max_squarings,
        alg.block_upper(a, x),
        _corner(g),
        Path(*path),
        depth=depth + 1,
        transposed=True,
    )
    return _diagonal_blocks(lifted)


def _hessian_jvp(primals, tangents, *, approximant, max_squarings, depth):
    a, g, x, *path = primals
    da, dg, dx = (ad.instantiate_zeros(t) for t in tangents[:3])
    path = Path(*path)
    out = hessian(approximant, max_squarings, a, g, x, path, depth=depth)
    # H is L* of the lifted problem at ([[A, X], [0, A]], [[0, G], [0, 0]]): differentiate that.
    point, corner = alg.block_upper(a, x), _corner(g)
    lifted = frechet(
        approximant, max_squarings, point, _corner(dg), path, depth=depth + 1, transposed=True
    ) + hessian(
        approximant, max_squarings, point, corner, alg.block_upper(da, dx), path, depth=depth + 1
    )
    return out, _diagonal_blocks(lifted)


def _hessian_transpose(ct, a, g, x, *path, approximant, max_squarings, depth):
    nones = (None,) * len(path)
    if ad.is_undefined_primal(a):
        raise ValueError("jexpm_frechet_hessian is linear in g and in x only")
    if ad.is_undefined_primal(x):
        # H(A, G, .) is a Hessian: symmetric, its own transpose.
        if type(ct) is ad.Zero:
            return None, None, ad.Zero(x.aval), *nones
        return (
            None,
            None,
            hessian(approximant, max_squarings, a, g, ct, Path(*path), depth=depth),
            *nones,
        )
    # <H(A, G, X), C> = <D^2 f(A)[X, C], G>, the top-right block of L at
    # ([[A, X], [0, A]], [[C, 0], [0, C]]).
    if type(ct) is ad.Zero:
        return None, ad.Zero(g.aval), None, *nones
    n = a.shape[-1]
    lifted = frechet(
        approximant,
        max_squarings,
        alg.block_upper(a, x),
        alg.block_upper(ct, jnp.zeros_like(ct)),
        Path(*path),
        depth=depth + 1,
    )
    return None, lifted[..., :n, n:], None, *nones


# Implemented and lowered as jitted functions: a program that holds the primitive traces
# its implementation once for each set of shapes and parameters, and every later program
# with the same (the value, its gradient, its jvp, ... in one process) reuses that trace.
_frechet_jit = jax.jit(
    _frechet_impl, static_argnames=("approximant", "max_squarings", "depth", "transposed")
)
frechet_p.def_impl(_frechet_jit)
frechet_p.def_abstract_eval(_frechet_abstract_eval)
mlir.register_lowering(frechet_p, mlir.lower_fun(_frechet_jit, multiple_results=False))
ad.primitive_jvps[frechet_p] = _frechet_jvp
ad.primitive_transposes[frechet_p] = _frechet_transpose
batching.primitive_batchers[frechet_p] = _batching.batch_rule(frechet_p)

_hessian_jit = jax.jit(_hessian_impl, static_argnames=("approximant", "max_squarings", "depth"))
hessian_p.def_impl(_hessian_jit)
hessian_p.def_abstract_eval(_hessian_abstract_eval)
mlir.register_lowering(hessian_p, mlir.lower_fun(_hessian_jit, multiple_results=False))
ad.primitive_jvps[hessian_p] = _hessian_jvp
ad.primitive_transposes[hessian_p] = _hessian_transpose
batching.primitive_batchers[hessian_p] = _batching.batch_rule(hessian_p)
