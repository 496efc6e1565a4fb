"""The matrix exponential as a swappable model option.

Every flow layer that exponentiates calls :func:`expm` or :func:`expm_lowrank` here
with the model's ``method`` and ``tol``, so a speed experiment changes only that
option and nothing else about the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg

import jexpm

# The tolerance rule is jexpm's own, so that a layer rejects at construction what
# jexpm would reject at its first call.
from jexpm._options import check_tol

#: Methods a flow accepts. :data:`jexpm.METHODS` are :func:`jexpm.expm`'s
#: methods; ``jax.scipy`` is :func:`jax.scipy.linalg.expm` (Padé 13); ``stand-in`` is
#: :math:`I + A`, a cost-free stand-in that only benchmarks use, to measure the
#: exponential's share of a training step (it is not the exponential: do not train
#: with it).
METHODS = (*jexpm.METHODS, "jax.scipy", "stand-in")


def check_method(method: str, tol: float | None, where: str = "expm") -> None:
    """Raise ``ValueError`` for an unknown method or a tolerance jexpm would reject.

    Raises:
      ValueError: ``method`` not in :data:`METHODS`, or ``tol`` outside (0, 1).
      TypeError: ``tol`` is not a Python number.
    """
    if method not in METHODS:
        raise ValueError(f"unknown expm method {method!r}; choose one of {METHODS}")
    check_tol(tol, where)


def expm(a: jax.Array, *, method: str, tol: float | None) -> jax.Array:
    """exp(a) for a stack of square matrices with the chosen method."""
    if method == "jax.scipy":
        return jax.scipy.linalg.expm(a)
    if method == "stand-in":
        return jnp.eye(a.shape[-1], dtype=a.dtype) + a
    return jexpm.expm(a, method=method, tol=tol)


def expm_lowrank(u: jax.Array, v: jax.Array, *, method: str, tol: float | None) -> jax.Array:
    r"""exp(u @ v) for u (..., n, r), v (..., r, n) as :math:`I + U \varphi_1(VU) V`.

    For ``jax.scipy``, :math:`\varphi_1(B)` is read off the exponential of the
    2r x 2r block matrix [[B, I], [0, 0]], whose top-right block it is.
    """
    if method not in ("jax.scipy", "stand-in"):
        return jexpm.expm_lowrank(u, v, method=method, tol=tol)
    n, r = u.shape[-2], u.shape[-1]
    eye_n = jnp.eye(n, dtype=u.dtype)
    if method == "stand-in":
        return eye_n + u @ v
    b = v @ u
    top = jnp.concatenate([b, jnp.broadcast_to(jnp.eye(r, dtype=b.dtype), b.shape)], axis=-1)
    block = jnp.concatenate([top, jnp.zeros_like(top)], axis=-2)
    p = jax.scipy.linalg.expm(block)[..., :r, r:]
    return eye_n + u @ p @ v
