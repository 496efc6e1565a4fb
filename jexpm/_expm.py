"""Public entry points: expm, phi1, expm_lowrank, expm_frechet."""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from ._schemes import METHODS, SCHEMES
from ._transforms import kernel

_LOW_PRECISION = (jnp.bfloat16, jnp.float16)


class ExpmInfo(NamedTuple):
    """What one call did, per batch member (arrays with the batch shape).

    Attributes:
      order: Taylor order m used (15 stands for 15+; for ``method="baseline"``, the
        number of Taylor terms summed).
      squarings: number of squarings s.
      products: matrix products used, A2, evaluation and squarings included.
    """

    order: jax.Array
    squarings: jax.Array
    products: jax.Array


def _as_square(a: ArrayLike, name: str, func: str) -> jax.Array:
    a = jnp.asarray(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"{func}: {name} must be a square matrix or a stack of them, shape (..., n, n); "
            f"got shape {a.shape}"
        )
    return _as_inexact(a, name, func)


def _as_inexact(a: jax.Array, name: str, func: str) -> jax.Array:
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        a = a.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    return a


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the algorithm runs in: float32 for bfloat16 and float16 input.

    Measured on a 2-core CPU (one product, batched): bfloat16 operands with float32
    accumulation took 0.07 / 2.5 / 5.5 ms against float32's 0.11 / 2.4 / 3.0 ms for
    64x48x48 / 4096x24x24 / 16384x12x12, and float16 0.2 / 3.0 / 3.9 ms: no gain
    worth the rounding of every intermediate. So low-precision input is computed in
    float32, with the tolerance of the input dtype (hence fewer products), and rounded
    back once. Accelerators with native bfloat16 units may change this choice.
    """
    return np.dtype(np.float32) if dtype in _LOW_PRECISION else np.dtype(dtype)


def _method(method: str, func: str) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{func}: method must be one of {METHODS}, got {method!r}")
    return method


def _static_tol(tol, func: str) -> float | None:
    """Check ``tol`` before it becomes a static argument of ``jax.jit``."""
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"{func}: tol must be a Python number (it selects the algorithm at trace "
            f"time), got {type(tol).__name__}"
        )
    tol = float(tol)
    if not (0 < tol < 1):
        raise ValueError(f"{func}: tol must satisfy 0 < tol < 1, got {tol}")
    return tol


def _tolerance(tol: float | None, dtype: np.dtype) -> float:
    """``tol``, with None meaning the unit roundoff of ``dtype``."""
    return float(jnp.finfo(dtype).eps) / 2 if tol is None else tol


def _run(family: str, a: jax.Array, tol, method: str):
    tol = _tolerance(tol, a.dtype)
    batch = a.shape[:-2]
    if a.shape[-1] == 0:
        zeros = jnp.zeros(batch, jnp.int32)
        return a, ExpmInfo(zeros, zeros, zeros)
    work = a.astype(_working_dtype(a.dtype))
    result, index, s, products = kernel(method, family, tol).forward(work)
    result = result.astype(a.dtype)
    if method == "baseline":
        order = index
    else:
        order = jnp.asarray(SCHEMES[method, family].orders, jnp.int32)[index]
    info = jax.tree_util.tree_map(lax.stop_gradient, ExpmInfo(order, s, products))
    return result, info


@overload
def expm(
    a: ArrayLike,
    *,
    tol: float | None = ...,
    method: str = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def expm(
    a: ArrayLike, *, tol: float | None = ..., method: str = ..., return_info: Literal[True]
) -> tuple[jax.Array, ExpmInfo]: ...


def expm(
    a: ArrayLike,
    *,
    tol: float | None = None,
    method: str = "opt15",
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, ExpmInfo]:
    r"""Matrix exponential by Taylor scaling and squaring with on-device order selection.

    Computes :math:`e^A = \sum_k A^k / k!` as :math:`T_m(2^{-s} A)^{2^s}`, where
    :math:`T_m` is a Taylor approximant of order :math:`m \in \{1, 2, 4, 8, 15+\}`
    evaluated with 0, 1, 2, 3 or 4 matrix products (Sastre's formulas; Paterson-
    Stockmeyer needs 6 products for order 16 and reaches only order 9 with 4). The
    order and :math:`s` are chosen from :math:`\|A\|_1` and :math:`\|A^2\|_1` so that
    the first two neglected Taylor terms stay below ``tol``; the choice happens on
    device (``lax.switch`` and a ``fori_loop``): no host synchronisation and no
    recompilation when the values change.

    For a batch (..., n, n) all members share the highest order any of them needs
    and each keeps its own number of squarings, so every member meets ``tol``.
    ``jax.vmap`` gets the same treatment. Gradients (``jax.grad``) go through a
    custom VJP that differentiates exactly the approximant that was computed,
    without storing the squarings, and can itself be differentiated in reverse mode
    to any order (``jax.jacrev(jax.jacrev(f))`` for Hessians). Forward mode
    (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) is not available through it and
    raises ``TypeError``: use :func:`jexpm.expm_frechet`.

    Args:
      a: array of shape (..., n, n); float32, float64, complex64, complex128,
        bfloat16 or float16 (computed in float32 with the tolerance of the input
        dtype, then rounded back). Integer and boolean input is promoted to the
        default float type.
      tol: bound on the truncation error of the scaled approximant (absolute, like
        the authors' rule); defaults to the unit roundoff of the dtype (2**-24 for
        float32, 2**-53 for float64, 2**-8 for bfloat16, 2**-11 for float16).
        Larger values are faster (e.g. ``1e-3`` for training); values below the
        unit roundoff buy squarings, not accuracy.
      method: ``"opt15"`` (default) for the Sastre formulas, ``"ps"`` for
        Paterson-Stockmeyer (orders 1, 2, 4, 6, 9, 12, 16), ``"baseline"`` for
        the Taylor loop of Xiao and Liu (2020) that the paper compares against. For
        the baseline ``tol`` is its stopping rule (stop once a Taylor term's norm is
        at most ``tol``), not a bound: its error can exceed ``tol`` (about 0.1 at
        ``tol=0.1`` on random matrices of norm 2). The
        baseline is for comparison only: it scales from ||A|| alone and loses
        accuracy on badly scaled or strongly non-normal matrices (on
        [[1, 1e17], [0, 1]] it loses the diagonal entirely).
      return_info: also return an :class:`ExpmInfo`.

    Returns:
      exp(a) with the shape and dtype of ``a`` and, with ``return_info=True``, an
      :class:`ExpmInfo` of per-member order, squarings and products. Members with a
      NaN or Inf entry give all-NaN results.

    Raises:
      ValueError: ``a`` is not (..., n, n), ``method`` is unknown, or ``tol`` is not
        in (0, 1).
      TypeError: ``tol`` not a Python number.

    Examples:
      >>> import jax.numpy as jnp, jexpm
      >>> a = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
      >>> bool(jnp.allclose(jexpm.expm(a) @ jexpm.expm(-a), jnp.eye(2), atol=1e-6))
      True
      >>> x, info = jexpm.expm(3.0 * a, return_info=True)
      >>> int(info.order), int(info.squarings), int(info.products)
      (15, 1, 5)

    References:
      J. Sastre et al., "Improving Matrix Exponential for Generative AI Flows: A
      Taylor-Based Approach Beyond Paterson-Stockmeyer", arXiv:2512.20777 (2025).
      J. Sastre, "Efficient evaluation of matrix polynomials", Linear Algebra Appl.
      539 (2018) 229-250.
    """
    return _series(a, "exp", _static_tol(tol, "expm"), _method(method, "expm"), return_info)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _series(a, family: str, tol: float | None, method: str, return_info: bool):
    """Compute expm (family "exp") or phi1 (family "phi1") of ``a``, jitted."""
    func = "expm" if family == "exp" else "phi1"
    result, info = _run(family, _as_square(a, "a", func), tol, method)
    return (result, info) if return_info else result


@overload
def phi1(
    a: ArrayLike,
    *,
    tol: float | None = ...,
    method: str = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def phi1(
    a: ArrayLike, *, tol: float | None = ..., method: str = ..., return_info: Literal[True]
) -> tuple[jax.Array, ExpmInfo]: ...


def phi1(
    a: ArrayLike,
    *,
    tol: float | None = None,
    method: str = "opt15",
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, ExpmInfo]:
    r"""The first phi-function, :math:`\varphi_1(A) = \sum_k A^k / (k+1)!`.

    :math:`\varphi_1(A) = A^{-1}(e^A - I)` when A is invertible, and
    :math:`e^A = I + A\,\varphi_1(A)` always. Same orders, products and on-device
    selection as :func:`expm`; large norms are handled by scaling and the doubling
    rule :math:`\varphi_1(2X) = \varphi_1(X) + \tfrac12 \varphi_1(X) X \varphi_1(X)`
    (two products per step).

    Args:
      a: array of shape (..., n, n).
      tol: truncation tolerance, default the unit roundoff of the dtype.
      method: ``"opt15"``, ``"ps"`` or ``"baseline"`` as in :func:`expm`.
      return_info: also return an :class:`ExpmInfo`.

    Returns:
      phi1(a), and optionally the :class:`ExpmInfo`.

    Raises:
      ValueError: as :func:`expm`.
      TypeError: as :func:`expm`.

    Examples:
      >>> import jax.numpy as jnp, jexpm
      >>> a = jnp.array([[0.5, 2.0], [0.0, -1.0]])
      >>> lhs = jnp.eye(2) + a @ jexpm.phi1(a)
      >>> bool(jnp.allclose(lhs, jexpm.expm(a), atol=1e-6))
      True

    References:
      N. J. Higham, "Functions of Matrices", SIAM (2008), section 10.7.4.
    """
    return _series(a, "phi1", _static_tol(tol, "phi1"), _method(method, "phi1"), return_info)


def expm_lowrank(
    u: ArrayLike, v: ArrayLike, *, tol: float | None = None, method: str = "opt15"
) -> jax.Array:
    r"""Exponential of a low-rank product, :math:`e^{UV} = I + U \varphi_1(VU) V`.

    Only the small r x r matrix VU is exponentiated, so the cost is
    O(n r^2 + n^2 r) instead of O(n^3); and :math:`\det e^{UV} = e^{\mathrm{tr}(VU)}`.

    Args:
      u: array of shape (..., n, r).
      v: array of shape (..., r, n).
      tol: tolerance passed to :func:`phi1`.
      method: method passed to :func:`phi1`.

    Returns:
      exp(u @ v), shape (..., n, n).

    Raises:
      ValueError: shapes that do not fit (..., n, r) and (..., r, n).
      TypeError: as :func:`expm`.

    Examples:
      >>> import jax, jax.numpy as jnp, jexpm
      >>> u = jax.random.normal(jax.random.key(0), (6, 2))
      >>> v = jax.random.normal(jax.random.key(1), (2, 6))
      >>> bool(jnp.allclose(jexpm.expm_lowrank(u, v), jexpm.expm(u @ v), atol=1e-5))
      True
    """
    return _expm_lowrank(
        u, v, tol=_static_tol(tol, "expm_lowrank"), method=_method(method, "expm_lowrank")
    )


@functools.partial(jax.jit, static_argnames=("tol", "method"))
def _expm_lowrank(u, v, *, tol, method):
    u, v = jnp.asarray(u), jnp.asarray(v)
    if u.ndim < 2 or v.ndim < 2 or u.shape[-1] != v.shape[-2] or u.shape[-2] != v.shape[-1]:
        raise ValueError(
            "expm_lowrank: u and v must have shapes (..., n, r) and (..., r, n); "
            f"got {u.shape} and {v.shape}"
        )
    dtype = jnp.result_type(
        _as_inexact(u, "u", "expm_lowrank"), _as_inexact(v, "v", "expm_lowrank")
    )
    tol = _tolerance(tol, dtype)
    work = _working_dtype(dtype)
    u, v = u.astype(work), v.astype(work)
    hi = lax.Precision.HIGHEST
    p = phi1(jnp.matmul(v, u, precision=hi), tol=tol, method=method)
    n = u.shape[-2]
    out = jnp.eye(n, dtype=work) + jnp.matmul(jnp.matmul(u, p, precision=hi), v, precision=hi)
    return out.astype(dtype)


def expm_frechet(
    a: ArrayLike,
    e: ArrayLike,
    *,
    tol: float | None = None,
    method: str = "opt15",
    compute_expm: bool = True,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Frechet derivative of the matrix exponential, :math:`L(A, E)`.

    :math:`L(A, E) = \frac{d}{dt} e^{A + tE} \big|_{t=0}`: the directional
    derivative, i.e. what ``jax.jvp`` would give (forward mode is not available
    through :func:`expm`'s custom VJP). It is the exact derivative of the approximant
    :func:`expm` computes at ``a`` (same order and squarings), evaluated forward
    while carrying the direction: memory does not grow with the squarings. The result
    is differentiable with ``jax.grad``.

    Args:
      a: array of shape (..., n, n).
      e: direction, same shape as ``a``.
      tol: tolerance, as in :func:`expm`.
      method: method, as in :func:`expm`.
      compute_expm: also return expm(a), as ``scipy.linalg.expm_frechet`` does.

    Returns:
      ``(expm(a), L(a, e))`` if ``compute_expm`` else ``L(a, e)``.

    Raises:
      ValueError: shapes that are not (..., n, n) or differ.
      TypeError: as :func:`expm`.

    Examples:
      >>> import jax.numpy as jnp, jexpm
      >>> a = jnp.array([[1.0, 2.0], [0.0, -1.0]])
      >>> x, l = jexpm.expm_frechet(a, a)
      >>> bool(jnp.allclose(l, a @ x, atol=1e-5))  # L(A, A) = A e^A
      True

    References:
      A. H. Al-Mohy and N. J. Higham, "Computing the Frechet derivative of the
      matrix exponential", SIAM J. Matrix Anal. Appl. 30(4) (2009).
    """
    return _expm_frechet(
        a,
        e,
        tol=_static_tol(tol, "expm_frechet"),
        method=_method(method, "expm_frechet"),
        compute_expm=compute_expm,
    )


@functools.partial(jax.jit, static_argnames=("tol", "method", "compute_expm"))
def _expm_frechet(a, e, *, tol, method, compute_expm):
    a = _as_square(a, "a", "expm_frechet")
    e = jnp.asarray(e)
    if e.shape != a.shape:
        raise ValueError(
            f"expm_frechet: e must have the shape of a, {a.shape}; got shape {e.shape}"
        )
    dtype = jnp.result_type(a, _as_inexact(e, "e", "expm_frechet"))
    tol = _tolerance(tol, dtype)
    if a.shape[-1] == 0:
        return (a.astype(dtype), e.astype(dtype)) if compute_expm else e.astype(dtype)
    work = _working_dtype(dtype)
    a, e = a.astype(work), e.astype(work)
    k = kernel(method, "exp", tol)
    x, index, s, _ = k.forward(a)
    frechet = k.frechet(a, e, lax.stop_gradient(index), lax.stop_gradient(s))
    x, frechet = x.astype(dtype), frechet.astype(dtype)
    return (x, frechet) if compute_expm else frechet
