r"""The phi-functions of exponential integrators, and their action.

:math:`\varphi_k(z) = \sum_{j \ge 0} z^j / (j + k)!`, so :math:`\varphi_0 = \exp` and
:math:`\varphi_k(z) = (\varphi_{k-1}(z) - 1/(k-1)!) / z`.

* ``phi``: by default by scaling and modified squaring (_phis.py, with its own
  derivative rules in both modes through _derivatives.py). With one of ``expm``'s
  methods, as the first block row of e^W for W = [[A, I, 0, ..., 0], [0, 0, I, ...,
  0], ..., [0, ..., 0]] ((k+1) n x (k+1) n) by ``expm`` (N. J. Higham, "Functions of
  Matrices", SIAM (2008), section 10.7.4), which costs about (k+1)^3 times more
  (docs/design.md, section 8a) and keeps ``expm``'s exact band for triangular input.
* ``phi_multiply``: sum_k t^k phi_k(tA) B_k is the top n rows of
  e^(t Ã) [B_0; E_p] with Ã = [[A, W], [0, J]], W = [B_p, ..., B_1] and J the block
  shift (A. H. Al-Mohy and N. J. Higham, SIAM J. Sci. Comput. 33(2) (2011), Theorem
  2.1, with every vector a block of m columns), computed by the action without forming
  any phi_k.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _options as opt
from . import _tuning
from ._derivatives import approximate
from ._expm import expm
from ._multiply import MultiplyMethod, expm_multiply
from ._options import Method
from ._phis import ModifiedSquaring

#: The methods of ``phi``: modified squaring, or the block matrix by ``expm``'s methods.
PHI_METHODS = ("squaring", *opt.METHODS)
PhiMethod = Literal["squaring", "opt15", "ps", "baseline"]


def _check_order(k: object, func: str, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{func}: {name} must be a Python int >= 0, got {k!r}")
    return k


def phi(
    a: ArrayLike, k: int, *, tol: float | None = None, method: PhiMethod = "squaring"
) -> jax.Array:
    r"""The phi-functions :math:`\varphi_0(A), \dots, \varphi_k(A)` of a matrix, stacked.

    :math:`\varphi_j(A) = \sum_{i \ge 0} A^i / (i + j)!`: :math:`\varphi_0 = e^A`,
    :math:`\varphi_1` is :func:`jexpm.phi1`, and
    :math:`\varphi_j(A) = A \varphi_{j+1}(A) + I / j!`.

    By default (``method="squaring"``) by the scaling and modified squaring of
    Skaflestad and Wright (2009): Taylor series of the :math:`\varphi_j` of
    :math:`X = 2^{-s} A` (s per member, from :math:`\|A\|_1` and the norms of powers
    of X), then s steps of
    :math:`\varphi_j(2X) = 2^{-j}[\varphi_0(X)\varphi_j(X) + \sum_{i=1}^{j}
    \varphi_i(X)/(j-i)!]`, k + 1 products of size n each. Its derivatives, in forward
    and reverse mode and of every order, are those of the computed function; reverse
    mode stores no squaring (docs/design.md, section 8a).

    With one of ``expm``'s methods (``"opt15"``, ``"ps"``, ``"baseline"``), as the
    first block row of the exponential of the block matrix
    :math:`W = \begin{bmatrix} A & I & & \\ & 0 & \ddots & \\ & & \ddots & I \\
    & & & 0 \end{bmatrix}` (size :math:`(k+1)n`) by :func:`jexpm.expm`, with its
    selection, exact triangular band and derivatives: about :math:`(k+1)^3` times the
    products of size n, measured 1.6–27 times slower in float64.

    Args:
      a: (..., n, n) matrices, dtypes as :func:`jexpm.expm`.
      k: the highest index, a Python int >= 0.
      tol: truncation tolerance, relative, per function (default: the unit roundoff
        of ``a``'s dtype).
      method: ``"squaring"`` (default), or a method of :func:`jexpm.expm` for the
        block matrix.

    Returns:
      An array of shape (..., k + 1, n, n): ``phi(a, k)[..., j, :, :]`` is
      :math:`\varphi_j(A)`. Members with a NaN or Inf entry give NaN.

    Raises:
      ValueError: ``a`` not (..., n, n), ``k`` not an int >= 0, ``method`` not one of
        ``"squaring"``, ``"opt15"``, ``"ps"``, ``"baseline"``, or ``tol`` out of range.

    Examples:
      >>> import jax.numpy as jnp, jexpm
      >>> a = jnp.array([[-1.0, 2.0], [0.0, -3.0]])
      >>> p = jexpm.phi(a, 2)
      >>> bool(jnp.allclose(p[0], jexpm.expm(a), atol=1e-6))
      True
      >>> bool(jnp.allclose(p[1], a @ p[2] + jnp.eye(2), atol=1e-6))  # phi_1 = A phi_2 + I
      True

    References:
      B. Skaflestad and W. M. Wright, "The scaling and modified squaring method for
      matrix functions related to the exponential", Appl. Numer. Math. 59 (2009).
      N. J. Higham, "Functions of Matrices", SIAM (2008), section 10.7.4.
    """
    k = _check_order(k, "phi")
    if not isinstance(method, str) or method not in PHI_METHODS:
        raise ValueError(f"phi: method must be one of {PHI_METHODS}, got {method!r}")
    tol = opt.check_tol(tol, "phi")
    opt.check_numeric("phi", a=a)
    (a,) = opt.as_inexact(a)
    opt.check_square(a, "a", "phi")
    n, blocks = a.shape[-1], k + 1
    batch = a.shape[:-2]
    if method != "squaring":
        return _phi_augmented(a, k, tol, opt.check_method(method, "phi"))
    if n == 0:
        return jnp.zeros((*batch, blocks, 0, 0), a.dtype)
    work = a.astype(opt.working_dtype(a.dtype))
    tol = opt.tolerance(tol, a.dtype)
    approximant = ModifiedSquaring(k, tol, tuning=_tuning.for_backend())
    result, _, _ = approximate(approximant, tol, None, None, work)
    return result.astype(a.dtype)


def _phi_augmented(a: jax.Array, k: int, tol: float | None, method: Method) -> jax.Array:
    """phi_0..phi_k as the first block row of e^W (module docstring)."""
    n, blocks = a.shape[-1], k + 1
    batch = a.shape[:-2]
    # W: A in the corner, identities on the block superdiagonal.
    shift = jnp.kron(jnp.eye(blocks, k=1, dtype=a.dtype), jnp.eye(n, dtype=a.dtype))
    corner = jnp.pad(a, [(0, 0)] * len(batch) + [(0, k * n), (0, k * n)])
    w = corner + jnp.broadcast_to(shift, corner.shape)
    top = expm(w, tol=tol, method=method)[..., :n, :]
    return jnp.stack([top[..., j * n : (j + 1) * n] for j in range(blocks)], axis=-3)


def phi_multiply(
    a: ArrayLike,
    bs: ArrayLike,
    *,
    t: ArrayLike | None = None,
    tol: float | None = None,
    method: MultiplyMethod = "action",
) -> jax.Array:
    r""":math:`\sum_{k=0}^{p} t^k \varphi_k(tA)\, b_k` without forming any :math:`\varphi_k`.

    The building block of exponential integrators (exponential Euler, ETD Runge-Kutta,
    exponential Rosenbrock): with the augmented matrix
    :math:`\tilde A = \begin{bmatrix} A & W \\ 0 & J \end{bmatrix}`,
    :math:`W = [b_p, \dots, b_1]` and :math:`J` the shift,
    the sum is the top n rows of :math:`e^{t \tilde A} [b_0; e_p]` (Al-Mohy and
    Higham 2011, Theorem 2.1), computed by :func:`jexpm.expm_multiply` with its
    on-device selection and both derivative modes, in ``a``, ``bs`` and ``t``.

    Args:
      a: (..., n, n) matrices.
      bs: the vectors :math:`b_0, \dots, b_p`, shape (..., p + 1, n); or blocks of m
        columns, shape (..., p + 1, n, m) (then ``bs.ndim == a.ndim + 1``). Batch
        shapes broadcast with those of ``a`` and ``t``.
      t: scalar or per-member times; default 1.
      tol: as :func:`jexpm.expm_multiply`.
      method: ``"action"`` (default) or ``"expm"``, as :func:`jexpm.expm_multiply`.

    Returns:
      The sum, shape (..., n) for vectors and (..., n, m) for blocks.

    Raises:
      ValueError: ``a`` not (..., n, n), ``bs`` without a leading (p + 1) axis of
        vectors or blocks of size n, or the options of :func:`jexpm.expm_multiply`
        out of range.

    Examples:
      >>> import jax.numpy as jnp, jexpm
      >>> a = jnp.array([[-2.0, 1.0], [0.0, -1.0]])
      >>> bs = jnp.array([[1.0, 0.0], [0.5, 2.0]])  # b_0, b_1
      >>> y = jexpm.phi_multiply(a, bs, t=0.1)
      >>> p = jexpm.phi(0.1 * a, 1)
      >>> bool(jnp.allclose(y, p[0] @ bs[0] + 0.1 * p[1] @ bs[1], atol=1e-6))
      True

    References:
      A. H. Al-Mohy and N. J. Higham, "Computing the action of the matrix
      exponential, with an application to exponential integrators", SIAM J. Sci.
      Comput. 33(2) (2011) 488-511.
    """
    opt.check_numeric("phi_multiply", a=a, bs=bs, t=t)
    a, bs = opt.as_inexact(a, bs)
    opt.check_square(a, "a", "phi_multiply")
    n = a.shape[-1]
    vectors = bs.ndim == a.ndim
    if bs.ndim not in (a.ndim, a.ndim + 1) or bs.shape[-1 if vectors else -2] != n:
        raise ValueError(
            "phi_multiply: bs must be (..., p + 1, n) vectors or (..., p + 1, n, m) blocks "
            f"for a of shape {a.shape}; got shape {bs.shape}"
        )
    if vectors:
        bs = bs[..., None]
    p, m = bs.shape[-3] - 1, bs.shape[-1]
    if p == 0:
        out = expm_multiply(a, bs[..., 0, :, :], t=t, tol=tol, method=method)
        return out[..., 0] if vectors else out
    batch = jnp.broadcast_shapes(a.shape[:-2], bs.shape[:-3])
    a = jnp.broadcast_to(a, (*batch, n, n))
    bs = jnp.broadcast_to(bs, (*batch, *bs.shape[-3:]))
    # W = [B_p, ..., B_1] (n x p m); J shifts the p blocks of m rows up by one.
    w = jnp.concatenate([bs[..., j, :, :] for j in range(p, 0, -1)], axis=-1)
    j = jnp.kron(jnp.eye(p, k=1, dtype=a.dtype), jnp.eye(m, dtype=a.dtype))
    lower = jnp.concatenate(
        [jnp.zeros((*batch, p * m, n), a.dtype), jnp.broadcast_to(j, (*batch, p * m, p * m))],
        axis=-1,
    )
    augmented = jnp.concatenate([jnp.concatenate([a, w], axis=-1), lower], axis=-2)
    e_p = jnp.zeros((p * m, m), a.dtype).at[(p - 1) * m :, :].set(jnp.eye(m, dtype=a.dtype))
    rhs = jnp.concatenate([bs[..., 0, :, :], jnp.broadcast_to(e_p, (*batch, p * m, m))], axis=-2)
    out = expm_multiply(augmented, rhs, t=t, tol=tol, method=method)[..., :n, :]
    return out[..., 0] if vectors else out
