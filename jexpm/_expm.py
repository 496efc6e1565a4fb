"""Public entry points: expm, phi1, expm_lowrank, expm_frechet."""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, overload

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _approximants as approximants
from . import _options as opt
from . import _tuning
from ._derivatives import approximate, frechet
from ._options import Method


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


def _approximant_call(
    a: jax.Array,
    family: str,
    method: str,
    tol: float | None,
    upper_triangular: bool | None = None,
    max_squarings: int | None = None,
    product_form: str | None = None,
    fused: bool = True,
):
    """The one path of every function: working dtype, default tol, empty input.

    ``a`` is an inexact (..., n, n) array; returns (result in a's dtype, ExpmInfo).
    ``upper_triangular`` is ``expm``'s: False (general input) selects an approximant
    without the exact band, so that the derivative rules leave it out; None (check on
    device) and True (promised) reach the computation.
    ``product_form`` (private, static) fixes the form of every matrix product
    (``_products.FORMS``) instead of the measured choice per size and backend;
    ``fused=False`` (private, static) keeps GPU programs off the fused kernels.
    """
    batch = a.shape[:-2]
    if a.shape[-1] == 0:
        zeros = jnp.zeros(batch, jnp.int32)
        return a, ExpmInfo(zeros, zeros, zeros)
    approximant = approximants.approximant(
        method,
        family,
        product_form,
        exact_band=upper_triangular is not False,
        fused=fused,
        tuning=_tuning.for_backend(),
    )
    tol = opt.tolerance(tol, a.dtype)
    work = a.astype(opt.working_dtype(a.dtype))
    upper_triangular = True if upper_triangular else None
    result, path, products = approximate(approximant, tol, upper_triangular, max_squarings, work)
    info = ExpmInfo(approximant.order(path.index), path.squarings, products)
    return result.astype(a.dtype), jax.tree_util.tree_map(lax.stop_gradient, info)


def _square_input(a: ArrayLike, func: str) -> jax.Array:
    (a,) = opt.as_inexact(a)
    opt.check_square(a, "a", func)
    return a


@overload
def expm(
    a: ArrayLike,
    *,
    upper_triangular: bool | None = ...,
    max_squarings: int | None = ...,
    tol: float | None = ...,
    method: Method = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def expm(
    a: ArrayLike,
    *,
    upper_triangular: bool | None = ...,
    max_squarings: int | None = ...,
    tol: float | None = ...,
    method: Method = ...,
    return_info: Literal[True],
) -> tuple[jax.Array, ExpmInfo]: ...


def expm(
    a: ArrayLike,
    *,
    upper_triangular: bool | None = None,
    max_squarings: int | None = None,
    tol: float | None = None,
    method: Method = "opt15",
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
    ``jax.vmap`` gets the same treatment. Derivatives work in both modes
    (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, ``jax.hessian``, to
    any order) and are the exact derivatives of the approximant that was computed
    (same order and squarings); reverse mode does not store the squarings.

    A drop-in for ``jax.scipy.linalg.expm``: it takes the same keywords
    (``upper_triangular``, ``max_squarings``) and promotes integer and boolean input
    as ``jax.numpy`` does.

    Args:
      a: array of shape (..., n, n); float32, float64, complex64, complex128,
        bfloat16 or float16 (computed in float32 with the tolerance of the input
        dtype, then rounded back). Integer and boolean input is promoted as
        ``jax.numpy`` promotes to an inexact type (64-bit integers to float64, the
        others to float32; float64 means float32 when x64 is off).
      upper_triangular: None (default): check on device whether the whole batch is
        upper triangular and if so recompute the diagonal and superdiagonal exactly
        after every squaring, as ``scipy.linalg.expm`` does. True: promise upper
        triangular input: the same without the check (for other input the result is
        wrong, as in ``jax.scipy.linalg.expm``). False: treat the input as general:
        no check and plain squaring, and the derivative's program leaves out the
        band's transpose, so ``jax.grad`` compiles in about a third of the time; for dense
        matrices, e.g. in training (on triangular input the value then has the
        general algorithm's accuracy, which overscaling can spoil). Derivatives
        follow the value: on the exact band's path, along upper triangular
        directions they are those of the band, along the others those of the
        polynomial at the same order and squarings.
      max_squarings: if given, members that would need more squarings return NaN
        (``jax.scipy.linalg.expm``'s default is 16); None (default) never caps.
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
      exp(a) with the shape of ``a`` and its (promoted) dtype and, with
      ``return_info=True``, an :class:`ExpmInfo` of per-member order, squarings and
      products. Members with a NaN or Inf entry give all-NaN results.

    Raises:
      ValueError: ``a`` is not (..., n, n), ``method`` is unknown, ``tol`` is not
        in (0, 1) or ``max_squarings`` is negative.
      TypeError: ``tol`` or ``max_squarings`` not a Python number.

    Examples:
      >>> import jax, jax.numpy as jnp, jexpm
      >>> a = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
      >>> bool(jnp.allclose(jexpm.expm(a) @ jexpm.expm(-a), jnp.eye(2), atol=1e-6))
      True
      >>> x, info = jexpm.expm(3.0 * a, return_info=True)
      >>> int(info.order), int(info.squarings), int(info.products)
      (15, 1, 5)
      >>> x, dx = jax.jvp(jexpm.expm, (a,), (a,))  # forward mode: L(A, A) = A e^A
      >>> bool(jnp.allclose(dx, a @ x, atol=1e-6))
      True

    References:
      J. Sastre et al., "Improving Matrix Exponential for Generative AI Flows: A
      Taylor-Based Approach Beyond Paterson-Stockmeyer", arXiv:2512.20777 (2025).
      J. Sastre, "Efficient evaluation of matrix polynomials", Linear Algebra Appl.
      539 (2018) 229-250.
    """
    if upper_triangular is not None and not isinstance(upper_triangular, bool):
        raise TypeError(
            "expm: upper_triangular must be None, True or False, got "
            f"{type(upper_triangular).__name__}"
        )
    opt.check_numeric("expm", a=a)
    return _expm(
        a,
        upper_triangular=upper_triangular,
        max_squarings=opt.check_max_squarings(max_squarings, "expm"),
        tol=opt.check_tol(tol, "expm"),
        method=opt.check_method(method, "expm"),
        return_info=return_info,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "upper_triangular",
        "max_squarings",
        "tol",
        "method",
        "return_info",
        "product_form",
        "fused",
    ),
)
def _expm(
    a,
    *,
    upper_triangular,
    max_squarings,
    tol,
    method,
    return_info,
    product_form=None,
    fused=True,
):
    result, info = _approximant_call(
        _square_input(a, "expm"),
        "exp",
        method,
        tol,
        upper_triangular,
        max_squarings,
        product_form,
        fused,
    )
    return (result, info) if return_info else result


@overload
def phi1(
    a: ArrayLike,
    *,
    tol: float | None = ...,
    method: Method = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def phi1(
    a: ArrayLike, *, tol: float | None = ..., method: Method = ..., return_info: Literal[True]
) -> tuple[jax.Array, ExpmInfo]: ...


def phi1(
    a: ArrayLike,
    *,
    tol: float | None = None,
    method: Method = "opt15",
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
    opt.check_numeric("phi1", a=a)
    return _phi1(
        a,
        tol=opt.check_tol(tol, "phi1"),
        method=opt.check_method(method, "phi1"),
        return_info=return_info,
    )


@functools.partial(jax.jit, static_argnames=("tol", "method", "return_info"))
def _phi1(a, *, tol, method, return_info):
    result, info = _approximant_call(_square_input(a, "phi1"), "phi1", method, tol)
    return (result, info) if return_info else result


@overload
def expm_lowrank(
    u: ArrayLike,
    v: ArrayLike,
    *,
    tol: float | None = ...,
    method: Method = ...,
    return_info: Literal[False] = ...,
) -> jax.Array: ...


@overload
def expm_lowrank(
    u: ArrayLike,
    v: ArrayLike,
    *,
    tol: float | None = ...,
    method: Method = ...,
    return_info: Literal[True],
) -> tuple[jax.Array, ExpmInfo]: ...


def expm_lowrank(
    u: ArrayLike,
    v: ArrayLike,
    *,
    tol: float | None = None,
    method: Method = "opt15",
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, ExpmInfo]:
    r"""Exponential of a low-rank product, :math:`e^{UV} = I + U \varphi_1(VU) V`.

    Only the small r x r matrix VU is exponentiated, so the cost is
    O(n r^2 + n^2 r) instead of O(n^3); and :math:`\det e^{UV} = e^{\mathrm{tr}(VU)}`.

    Args:
      u: array of shape (..., n, r).
      v: array of shape (..., r, n).
      tol: tolerance passed to :func:`phi1`.
      method: method passed to :func:`phi1`.
      return_info: also return the :class:`ExpmInfo` of the r x r :func:`phi1`
        evaluation.

    Returns:
      exp(u @ v), shape (..., n, n), and optionally the :class:`ExpmInfo`.

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
    opt.check_numeric("expm_lowrank", u=u, v=v)
    return _expm_lowrank(
        u,
        v,
        tol=opt.check_tol(tol, "expm_lowrank"),
        method=opt.check_method(method, "expm_lowrank"),
        return_info=return_info,
    )


@functools.partial(jax.jit, static_argnames=("tol", "method", "return_info"))
def _expm_lowrank(u, v, *, tol, method, return_info):
    u, v = opt.as_inexact(u, v)
    if u.ndim < 2 or v.ndim < 2 or u.shape[-1] != v.shape[-2] or u.shape[-2] != v.shape[-1]:
        raise ValueError(
            "expm_lowrank: u and v must have shapes (..., n, r) and (..., r, n); "
            f"got {u.shape} and {v.shape}"
        )
    dtype = u.dtype
    tol = opt.tolerance(tol, dtype)
    work = opt.working_dtype(dtype)
    u, v = u.astype(work), v.astype(work)
    hi = lax.Precision.HIGHEST
    p, info = _approximant_call(jnp.matmul(v, u, precision=hi), "phi1", method, tol)
    n = u.shape[-2]
    upv = jnp.matmul(jnp.matmul(u, p, precision=hi), v, precision=hi)
    out = (upv + jnp.broadcast_to(jnp.eye(n, dtype=work), upv.shape)).astype(dtype)
    return (out, info) if return_info else out


def expm_frechet(
    a: ArrayLike,
    e: ArrayLike,
    *,
    tol: float | None = None,
    method: Method = "opt15",
    compute_expm: bool = True,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Frechet derivative of the matrix exponential, :math:`L(A, E)`.

    :math:`L(A, E) = \frac{d}{dt} e^{A + tE} \big|_{t=0}`: the directional
    derivative, what ``jax.jvp(jexpm.expm, (a,), (e,))`` gives. It is the exact
    derivative of the approximant :func:`expm` computes at ``a`` (same order and
    squarings), evaluated forward while carrying the direction: memory does not grow
    with the squarings. The result is differentiable in both modes, to any order.
    The batch shapes of ``a`` and ``e`` broadcast, as in ``scipy.linalg.expm_frechet``.

    Args:
      a: array of shape (..., n, n).
      e: direction, shape (..., n, n); its batch shape broadcasts with that of ``a``.
      tol: tolerance, as in :func:`expm`.
      method: method, as in :func:`expm`.
      compute_expm: also return expm(a), as ``scipy.linalg.expm_frechet`` does.

    Returns:
      ``(expm(a), L(a, e))`` if ``compute_expm`` else ``L(a, e)``, with the broadcast
      batch shape and the promoted dtype of ``a`` and ``e``.

    Raises:
      ValueError: shapes that are not (..., n, n), differ in n or do not broadcast.
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
    opt.check_numeric("expm_frechet", a=a, e=e)
    return _expm_frechet(
        a,
        e,
        tol=opt.check_tol(tol, "expm_frechet"),
        method=opt.check_method(method, "expm_frechet"),
        compute_expm=compute_expm,
    )


@functools.partial(jax.jit, static_argnames=("tol", "method", "compute_expm"))
def _expm_frechet(a, e, *, tol, method, compute_expm):
    a, e = opt.as_inexact(a, e)
    opt.check_square(a, "a", "expm_frechet")
    if e.shape[-2:] != a.shape[-2:]:
        raise ValueError(
            f"expm_frechet: e must be (..., n, n) with the n of a, {a.shape[-1]}; "
            f"got shapes a {a.shape} and e {e.shape}"
        )
    try:
        batch = jnp.broadcast_shapes(a.shape[:-2], e.shape[:-2])
    except ValueError:
        raise ValueError(
            f"expm_frechet: the batch shapes of a {a.shape} and e {e.shape} do not broadcast"
        ) from None
    shape = (*batch, *a.shape[-2:])
    a, e = jnp.broadcast_to(a, shape), jnp.broadcast_to(e, shape)
    dtype = a.dtype
    if a.shape[-1] == 0:
        return (a, e) if compute_expm else e
    approximant = approximants.approximant(method, "exp", tuning=_tuning.for_backend())
    work = opt.working_dtype(dtype)
    a, e = a.astype(work), e.astype(work)
    x, path, _ = approximate(approximant, opt.tolerance(tol, dtype), None, None, a)
    path = jax.tree_util.tree_map(lax.stop_gradient, path)
    derivative = frechet(approximant, None, a, e, path).astype(dtype)
    return (x.astype(dtype), derivative) if compute_expm else derivative
