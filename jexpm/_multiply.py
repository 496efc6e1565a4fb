"""Public entry point expm_multiply, e^(tA) B, and the derivative rules of the action.

The action (``_action.py``) is a custom JVP: its tangent is the primitive
``jexpm_action_tangent``, the forward-mode derivative of ``_action.evaluate`` at the
path the value took (same order, steps and early terminations), linear in (dX, dB).
Its transpose, the primitive ``jexpm_action_transpose``, runs the steps backwards
(``_action.transpose``), so reverse mode (``grad``, ``vjp``, ``jacrev``)
differentiates the same function without JAX transposing a ``while_loop``. Both
primitives batch by treating the mapped axis as one more batch dimension, and both
have the JVP of their own implementation as their JVP (second derivatives, forward over
either mode). t enters only through X = t A, so its derivative is that of X.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.typing import ArrayLike

from . import _action as action_alg
from . import _action_kernel, _products, _tuning
from . import _options as opt
from ._batching import batch_rule, in_chunks
from ._expm import _approximant_call

#: The methods of :func:`expm_multiply`.
MULTIPLY_METHODS = ("action", "expm")
#: The methods of :func:`expm_multiply` as a type, for annotations.
MultiplyMethod = Literal["action", "expm"]


class ActionInfo(NamedTuple):
    """What one :func:`expm_multiply` call did, per batch member (batch-shaped arrays).

    Attributes:
      order: Taylor order m (``method="action"``; 1 when the shifted matrix is zero)
        or the order of :func:`jexpm.expm` (``method="expm"``).
      steps: scaling steps s (``"action"``; 0 for members that returned NaN) or
        squarings (``"expm"``).
      matvecs: products of the n x n matrix with one vector (k per product with
        the n x k block): the Taylor terms summed, times k, for ``"action"``; k for
        ``"expm"``.
      matrix_products: n x n matrix products: those spent on the norms of powers
        (0 or 3, the same for every member of a batch, or of a slice of a large one)
        for ``"action"``, those of :func:`jexpm.expm` for ``"expm"``.
      formed: whether the member's value is ``expm(t a) @ b`` (bool): every member
        for ``"expm"``; for ``"action"``, the stiff members, which would have needed
        more than 4096 steps (their order, steps, matvecs and matrix_products are
        then those of ``"expm"``, plus the norms' products).
    """

    order: jax.Array
    steps: jax.Array
    matvecs: jax.Array
    matrix_products: jax.Array
    formed: jax.Array


# ---------------------------------------------------------------------------------
# The action with its derivative rules


def _compute(tol: float, x: jax.Array, b: jax.Array):
    x0, _ = action_alg.shift(x)
    path, spent = action_alg.select(x0, b.shape[-1], tol, _products.matmul)
    f, count = action_alg.evaluate(x, b, path, tol)
    return f, path, count, jnp.broadcast_to(spent, count.shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _action(tol: float, x: jax.Array, b: jax.Array):
    """(F, path, block products, n x n products) for X (..., n, n) and B (..., n, k).

    Large batches run in cache-sized slices (``in_chunks``), each with its own loop
    counts; in programs for CUDA GPUs, batches the kernel covers run in
    ``_action_kernel.compute`` instead.
    """
    xla = functools.partial(in_chunks, functools.partial(_compute, tol))
    if _action_kernel.covers(x, b, _tuning.GPU):
        # In programs for CUDA GPUs the whole batch runs in the fused kernel.
        cuda = functools.partial(_action_kernel.compute, tol)
        return lax.platform_dependent(x, b, cuda=cuda, default=xla)
    return xla(x, b)


@_action.defjvp
def _action_jvp(tol, primals, tangents):
    (x, b), (dx, db) = primals, tangents
    f, path, count, spent = _action(tol, x, b)
    df = tangent_p.bind(x, b, dx, db, *path, tol=tol)
    zeros = jax.tree_util.tree_map(
        lambda v: np.zeros(v.shape, jax.dtypes.float0), (path, count, spent)
    )
    return (f, path, count, spent), (df, *zeros)


tangent_p = Primitive("jexpm_action_tangent")
transpose_p = Primitive("jexpm_action_transpose")
transpose_p.multiple_results = True


def _tangent_xla(x, b, dx, db, order, steps, *, tol):
    def slice_fn(x, b, dx, db, order, steps):
        path = action_alg.ActionPath(order, steps)
        evaluate = lambda x, b: action_alg.evaluate(x, b, path, tol)[0]  # noqa: E731
        return jax.jvp(evaluate, (x, b), (dx, db))[1]

    return in_chunks(slice_fn, x, b, dx, db, order, steps, for_memory=True)


def _transpose_xla(x, b, g, order, steps, *, tol):
    def slice_fn(x, b, g, order, steps):
        return action_alg.transpose(x, b, g, action_alg.ActionPath(order, steps), tol)

    return list(in_chunks(slice_fn, x, b, g, order, steps, for_memory=True))


def _on_gpu(kernel, xla):
    """``xla``, or in programs for CUDA GPUs ``kernel`` where it covers the sizes."""

    def impl(x, b, *args, tol):
        default = functools.partial(xla, tol=tol)
        if not _action_kernel.covers(x, b, _tuning.GPU):
            return default(x, b, *args)
        cuda = functools.partial(kernel, tol)
        return lax.platform_dependent(x, b, *args, cuda=cuda, default=default)

    return impl


_tangent_impl = _on_gpu(_action_kernel.tangent, _tangent_xla)
_transpose_impl = _on_gpu(_action_kernel.transpose, _transpose_xla)


def _tangent_transpose(ct, x, b, dx, db, order, steps, *, tol):
    if ad.is_undefined_primal(x) or ad.is_undefined_primal(b):
        raise ValueError("jexpm_action_tangent is linear in its directions only")
    gx = gb = None
    if type(ct) is not ad.Zero:
        gx, gb = transpose_p.bind(x, b, ct, order, steps, tol=tol)
    out_x = out_b = None
    if ad.is_undefined_primal(dx):
        out_x = ad.Zero(dx.aval) if gx is None else gx
    if ad.is_undefined_primal(db):
        out_b = ad.Zero(db.aval) if gb is None else gb
    return None, None, out_x, out_b, None, None


def _second_order_rule(impl):
    """Forward-mode rule of a derivative primitive: the JVP of its implementation.

    The derivatives of the action's own derivatives are those of the loops that compute
    them (the same path, since the loop counts depend on values only through
    comparisons). They give forward-over-reverse and forward-over-forward second
    derivatives (``jax.hessian``, Hessian-vector products ``jvp(grad(f))``); the result
    runs ``while_loop``s, so reverse mode cannot transpose it a second time. ``impl``
    is the XLA path's on every platform: a GPU program's second derivatives keep its
    loops (the kernels of _action_kernel.py have no JVP of their own).
    """

    def rule(primals, tangents, **params):
        *args, order, steps = primals
        directions = [ad.instantiate_zeros(t) for t in tangents[: len(args)]]

        def of_args(*args):
            return impl(*args, order, steps, **params)

        return jax.jvp(of_args, tuple(args), tuple(directions))

    return rule


# Jitted, so that every program holding a primitive with the same shapes reuses one trace
# of its implementation (as _derivatives.py does for its own).
_tangent_jit = jax.jit(_tangent_impl, static_argnames=("tol",))
tangent_p.def_impl(_tangent_jit)
tangent_p.def_abstract_eval(lambda x, b, dx, db, order, steps, tol: ShapedArray(b.shape, b.dtype))
mlir.register_lowering(tangent_p, mlir.lower_fun(_tangent_jit, multiple_results=False))
ad.primitive_transposes[tangent_p] = _tangent_transpose
batching.primitive_batchers[tangent_p] = batch_rule(tangent_p)
ad.primitive_jvps[tangent_p] = _second_order_rule(_tangent_xla)

_transpose_jit = jax.jit(_transpose_impl, static_argnames=("tol",))
transpose_p.def_impl(_transpose_jit)
transpose_p.def_abstract_eval(
    lambda x, b, g, order, steps, tol: (
        ShapedArray(x.shape, x.dtype),
        ShapedArray(b.shape, b.dtype),
    )
)
mlir.register_lowering(transpose_p, mlir.lower_fun(_transpose_jit, multiple_results=True))
batching.primitive_batchers[transpose_p] = batch_rule(transpose_p)
ad.primitive_jvps[transpose_p] = _second_order_rule(_transpose_xla)


# ---------------------------------------------------------------------------------
# The public function


def _check_method(method: object) -> MultiplyMethod:
    if not isinstance(method, str) or method not in MULTIPLY_METHODS:
        raise ValueError(f"expm_multiply: method must be one of {MULTIPLY_METHODS}, got {method!r}")
    return method  # type: ignore[return-value]


@overload
def expm_multiply(
    a: ArrayLike,
    b: ArrayLike,
    *,
    t: ArrayLike | None = ...,
    tol: float | None = ...,
    method: MultiplyMethod = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def expm_multiply(
    a: ArrayLike,
    b: ArrayLike,
    *,
    t: ArrayLike | None = ...,
    tol: float | None = ...,
    method: MultiplyMethod = ...,
    return_info: Literal[True],
) -> tuple[jax.Array, ActionInfo]: ...


def expm_multiply(
    a: ArrayLike,
    b: ArrayLike,
    *,
    t: ArrayLike | None = None,
    tol: float | None = None,
    method: MultiplyMethod = "action",
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, ActionInfo]:
    r"""The action of the matrix exponential, :math:`e^{tA} B`, without forming :math:`e^{tA}`.

    With ``method="action"`` (default) this is Al-Mohy and Higham's algorithm: shift
    by :math:`\mu = \mathrm{tr}(tA)/n`, then :math:`s` steps
    :math:`F \leftarrow e^{\mu/s} T_m(s^{-1}(tA - \mu I)) F` with the degree-:math:`m`
    Taylor polynomial :math:`T_m` applied by :math:`m` products with the n x k block,
    each sum ending early once two consecutive terms are negligible. :math:`(m, s)`
    minimise the cost :math:`m s` subject to the backward error bound
    :math:`\theta_m` for ``tol`` (:math:`m \le 55`), from :math:`\|tA\|_1` or, where
    it can pay off, from the sharper :math:`\|(tA)^p\|_1^{1/p}`, p <= 9 (the norms of
    the 2nd, 4th and 8th powers computed exactly, three n x n products for the batch).
    Everything is chosen on device per member: no host synchronisation and no
    recompilation for new values; the loops run to the batch's largest counts and
    members that are done keep their value. Cost grows with :math:`\|tA\|_1` (linearly,
    where ``expm`` grows logarithmically) and with k: the action pays for small norms,
    few columns and larger n (measured crossovers: the documentation's guide to the
    action, ``docs/guides/action.md``).

    ``method="expm"`` forms :func:`jexpm.expm` of tA and multiplies: cheaper for many
    columns or large norms.

    Derivatives (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.jacrev``, under
    ``jax.jit`` and ``jax.vmap``) are those of the computed approximant, with respect
    to ``a``, ``b`` and ``t``: forward mode carries the direction through the same
    steps; reverse mode runs the steps backwards, recomputing each step's terms
    (memory: at most 32 states and 56 terms of size n x k per member; for more than 32
    steps some states are recomputed). Second derivatives of ``method="action"`` are
    forward mode over either mode (``jax.hessian``, ``jax.jvp(jax.grad(f), ...)``);
    reverse mode over a derivative raises (``method="expm"`` has every order).

    Args:
      a: (..., n, n) matrices; float32, float64, complex64, complex128, bfloat16 or
        float16 (computed in float32 with the tolerance of the input dtype); integer
        and boolean input is promoted as in :func:`jexpm.expm`.
      b: the vectors or blocks acted on. If ``b.ndim == a.ndim - 1``, ``b`` is a
        stack of vectors, shape (..., n), one per matrix; otherwise a stack of n x k
        blocks, shape (..., n, k). Batch shapes broadcast with those of ``a``
        and ``t``.
      t: scalar or array of per-member times broadcasting with the batch; default 1.
      tol: backward error tolerance of the truncated series, in (0, 1); defaults to
        the unit roundoff of the dtype (as :func:`jexpm.expm`). Also the relative
        threshold of the early termination.
      method: ``"action"`` (default) or ``"expm"`` (``expm(t a) @ b``).
      return_info: also return an :class:`ActionInfo`.

    Returns:
      e^(ta) b with the broadcast batch shape, shape (..., n) for vectors and
      (..., n, k) for blocks, in the promoted dtype; and with ``return_info`` an
      :class:`ActionInfo`. Members whose a, b or t has a NaN or Inf entry give NaN.
      With ``"action"``, members that would need more than 4096 steps
      (:math:`\|tA\|_1` above about 8e4 in float64) are computed as
      ``expm(t a) @ b``, with its derivatives (``ActionInfo.formed``).

    Raises:
      ValueError: ``a`` not (..., n, n); ``b`` whose n differs from that of ``a``;
        batch shapes that do not broadcast; unknown ``method``; ``tol`` not in (0, 1).
      TypeError: ``tol`` not a Python number.

    Examples:
      >>> import jax, jax.numpy as jnp, jexpm
      >>> a = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
      >>> b = jnp.array([1.0, 0.0])
      >>> y = jexpm.expm_multiply(a, b, t=0.5)
      >>> bool(jnp.allclose(y, jexpm.expm(0.5 * a) @ b, atol=1e-6))
      True
      >>> back = jexpm.expm_multiply(a, y, t=-0.5)  # e^(-tA) e^(tA) b = b
      >>> bool(jnp.allclose(back, b, atol=1e-6))
      True
      >>> dy = jax.jacfwd(lambda t: jexpm.expm_multiply(a, b, t=t))(0.5)
      >>> bool(jnp.allclose(dy, a @ y, atol=1e-6))  # d/dt e^(tA) b = A e^(tA) b
      True

    References:
      A. H. Al-Mohy and N. J. Higham, "Computing the action of the matrix
      exponential, with an application to exponential integrators", SIAM J. Sci.
      Comput. 33(2) (2011) 488-511.
    """
    opt.check_numeric("expm_multiply", a=a, b=b, t=t)
    return _expm_multiply(
        a,
        b,
        t,
        tol=opt.check_tol(tol, "expm_multiply"),
        method=_check_method(method),
        return_info=return_info,
    )


def _shapes(a: jax.Array, b: jax.Array, t: jax.Array | None):
    """(batch shape, whether b holds vectors, k), or ValueError naming the shapes."""
    opt.check_square(a, "a", "expm_multiply")
    n = a.shape[-1]
    vectors = b.ndim == a.ndim - 1
    if b.ndim < 1 or (not vectors and b.ndim < 2):
        raise ValueError(
            f"expm_multiply: b must have shape (..., n) or (..., n, k); got a {a.shape} "
            f"and b {b.shape}"
        )
    rows = b.shape[-1] if vectors else b.shape[-2]
    if rows != n:
        what = "(..., n) vectors" if vectors else "(..., n, k) blocks"
        raise ValueError(
            f"expm_multiply: b read as {what} (b.ndim {'==' if vectors else '!='} "
            f"a.ndim - 1) must have n = {n} rows to match a; got a {a.shape} and b {b.shape}"
        )
    b_batch = b.shape[:-1] if vectors else b.shape[:-2]
    t_shape = () if t is None else t.shape
    try:
        batch = jnp.broadcast_shapes(a.shape[:-2], b_batch, t_shape)
    except ValueError:
        raise ValueError(
            f"expm_multiply: the batch shapes of a {a.shape}, b {b.shape} and t {t_shape} "
            "do not broadcast"
        ) from None
    return batch, vectors, (1 if vectors else b.shape[-1])


def _promote(a, b, t):
    """The inputs: a and b in their common inexact dtype, t real (or complex) to match.

    A real t multiplies a complex a without promoting it; otherwise JAX's rules apply
    (under ``jax_numpy_dtype_promotion="strict"``, t must match a's precision).
    """
    a, b = opt.as_inexact(a, b)
    if t is None:
        return a, b, None
    t = jnp.asarray(t)
    if jnp.issubdtype(t.dtype, jnp.complexfloating):
        return tuple(opt.as_inexact(a, b, t))
    t, _ = opt.as_inexact(t, jnp.zeros((), jnp.finfo(a.dtype).dtype))
    wide = np.result_type(a.dtype, t.dtype)
    return a.astype(wide), b.astype(wide), t


def _formed(x: jax.Array, b: jax.Array, tol: float | None, upper_triangular: bool | None = None):
    """(expm(x) @ b, the exponential's ExpmInfo), with expm's derivative rules.

    ``upper_triangular``: as ``expm``'s (False leaves the exact band of triangular
    input, and its branches in the derivative programs, out).
    """
    e, e_info = _approximant_call(x, "exp", "opt15", tol, upper_triangular)
    return jnp.matmul(e, b, precision=lax.Precision.HIGHEST), e_info


@functools.partial(jax.jit, static_argnames=("tol", "method", "return_info"))
def _expm_multiply(a, b, t, *, tol, method, return_info):
    a, b, t = _promote(a, b, t)
    batch, vectors, k = _shapes(a, b, t)
    n = a.shape[-1]
    dtype = a.dtype
    a = jnp.broadcast_to(a, (*batch, n, n))
    b = jnp.broadcast_to(b[..., None] if vectors else b, (*batch, n, k))
    x = a if t is None else jnp.broadcast_to(t.astype(dtype), batch)[..., None, None] * a
    finite_b = jnp.all(jnp.isfinite(b), axis=(-2, -1))
    if n == 0:
        zeros = jnp.zeros(batch, jnp.int32)
        f, info = b, ActionInfo(zeros, zeros, zeros, zeros, jnp.zeros(batch, bool))
    elif method == "expm":
        f, e_info = _formed(x, b, tol)
        info = ActionInfo(
            e_info.order,
            e_info.squarings,
            jnp.full(batch, k, jnp.int32),
            e_info.products,
            jnp.ones(batch, bool),
        )
    else:
        work = opt.working_dtype(dtype)
        f, path, count, spent = _action(opt.tolerance(tol, dtype), x.astype(work), b.astype(work))
        formed = path.order == action_alg.FORMED

        # Branch-free: the members not formed are zero matrices here, the exponential's
        # cheapest case (no squarings; order 1 where no member is formed). A lax.cond on
        # "any member formed" would spare even that, but its vmap (a select of both
        # branches) does not compose with reverse mode through expm's custom_vmap.
        # The fallback leaves out the exact triangular band: its branches would double
        # the size of every action program (value and derivatives) for a path that
        # only stiff members take.
        f_formed, e_info = _formed(jnp.where(formed[..., None, None], x, 0), b, tol, False)
        f = jnp.where(formed[..., None, None], f_formed, f.astype(dtype))
        info = ActionInfo(
            jnp.where(formed, e_info.order, path.order),
            jnp.where(formed, e_info.squarings, path.steps),
            jnp.where(formed, k, count * k),
            jnp.where(formed, e_info.products, 0) + spent,
            formed,
        )
    f = jnp.where(finite_b[..., None, None], f, jnp.nan)
    f = f[..., 0] if vectors else f
    info = jax.tree_util.tree_map(lax.stop_gradient, info)
    return (f, info) if return_info else f
