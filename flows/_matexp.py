"""The matrix exponential as a swappable model option: a registry of exponentials.

Every flow layer that exponentiates calls :func:`expm` or :func:`expm_lowrank` here
with the model's ``method`` and ``tol``, so changing the exponential changes only that
option and nothing else about the model. The methods are looked up in a registry that
holds ``flows.EXPM_METHODS`` (jexpm's methods and ``jax.scipy``); a program can add its own
with :func:`register_exponential`, e.g. a cost-free I + A that shows what share of a
training step the exponential takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, cast

import jax
import jax.numpy as jnp
import jax.scipy.linalg

import jexpm

# The tolerance rule is jexpm's own, so that a layer rejects at construction what
# jexpm would reject at its first call (an import that tests/test_architecture.py
# allows by name).
from jexpm._options import check_tol

#: The built-in methods: :data:`jexpm.METHODS` are :func:`jexpm.expm`'s; ``jax.scipy``
#: is :func:`jax.scipy.linalg.expm` (Padé 13).
METHODS = (*jexpm.METHODS, "jax.scipy")
#: The built-in method names as a type.
Method = Literal["opt15", "ps", "baseline", "jax.scipy"]

ExpmFn = Callable[[jax.Array, "float | None"], jax.Array]
LowRankFn = Callable[[jax.Array, jax.Array, "float | None"], jax.Array]
#: An exponential and what it did: jexpm's :class:`jexpm.ExpmInfo`, or ``None`` for
#: methods that do not report it.
WithInfo = tuple[jax.Array, "jexpm.ExpmInfo | None"]


@dataclasses.dataclass(frozen=True)
class _Exponential:
    expm: Callable[[jax.Array, float | None], WithInfo]
    expm_lowrank: Callable[[jax.Array, jax.Array, float | None], WithInfo]


def _jexpm(method: str) -> _Exponential:
    m = cast(jexpm.Method, method)
    # A flow's matrices are dense: no on-device triangular check, and a gradient
    # program without the exact band's branch (about half the exponential's compile time).
    return _Exponential(
        lambda a, tol: jexpm.expm(a, upper_triangular=False, method=m, tol=tol, return_info=True),
        lambda u, v, tol: jexpm.expm_lowrank(u, v, method=m, tol=tol, return_info=True),
    )


def _without_info(expm: ExpmFn, expm_lowrank: LowRankFn) -> _Exponential:
    return _Exponential(
        lambda a, tol: (expm(a, tol), None), lambda u, v, tol: (expm_lowrank(u, v, tol), None)
    )


def _scipy_lowrank(u: jax.Array, v: jax.Array, tol: float | None) -> jax.Array:
    r"""exp(u @ v) as :math:`I + U \varphi_1(VU) V`, with jax.scipy for :math:`\varphi_1`.

    :math:`\varphi_1(B)` is read off the exponential of the 2r x 2r block matrix
    [[B, I], [0, 0]], whose top-right block it is.
    """
    del tol
    n, r = u.shape[-2], u.shape[-1]
    b = v @ u
    top = jnp.concatenate([b, jnp.broadcast_to(jnp.eye(r, dtype=b.dtype), b.shape)], axis=-1)
    block = jnp.concatenate([top, jnp.zeros_like(top)], axis=-2)
    p = jax.scipy.linalg.expm(block)[..., :r, r:]
    return jnp.eye(n, dtype=u.dtype) + u @ p @ v


def _dense_lowrank(expm: ExpmFn) -> LowRankFn:
    return lambda u, v, tol: expm(u @ v, tol)


_REGISTRY: dict[str, _Exponential] = {m: _jexpm(m) for m in jexpm.METHODS}
_REGISTRY["jax.scipy"] = _without_info(lambda a, tol: jax.scipy.linalg.expm(a), _scipy_lowrank)


def register_exponential(
    name: str, expm: ExpmFn, expm_lowrank: LowRankFn | None = None, *, replace: bool = False
) -> None:
    """Make ``name`` a method that every flow layer accepts, computed by ``expm``.

    The layers look the method up when they are traced, so a model built with
    ``GlowOptions(expm_method=name)`` uses ``expm`` for every exponential. Code may
    name any registered method; the command line takes ``flows.EXPM_METHODS``.

    Args:
      name: the method name.
      expm: ``(a, tol) -> exp(a)`` for a stack (..., n, n); ``tol`` is the layer's.
      expm_lowrank: ``(u, v, tol) -> exp(u @ v)`` for u (..., n, r), v (..., r, n);
        default ``expm(u @ v, tol)``.
      replace: allow ``name`` to be registered already (never a built-in method).

    Raises:
      ValueError: ``name`` is a built-in method, or registered already and not
        ``replace``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flows
      >>> flows.register_exponential(
      ...     "I + A", lambda a, tol: jnp.eye(a.shape[-1], dtype=a.dtype) + a, replace=True)
      >>> options = flows.GlowOptions(expm_method="I + A")
      >>> conv = flows.MatrixExp1x1Conv(3, options, rngs=nnx.Rngs(0))
    """
    if name in METHODS or (name in _REGISTRY and not replace):
        raise ValueError(f"expm method {name!r} is registered already")
    _REGISTRY[name] = _without_info(expm, expm_lowrank or _dense_lowrank(expm))


def registered() -> tuple[str, ...]:
    """Every method a flow layer accepts: ``flows.EXPM_METHODS`` and those registered since."""
    return tuple(_REGISTRY)


def check_method(method: str, tol: float | None, where: str = "expm") -> None:
    """Raise ``ValueError`` for an unknown method or a tolerance jexpm would reject.

    Raises:
      ValueError: ``method`` not registered, or ``tol`` outside (0, 1).
      TypeError: ``tol`` is not a Python number.
    """
    if method not in _REGISTRY:
        raise ValueError(f"unknown expm method {method!r}; choose one of {registered()}")
    check_tol(tol, where)


def expm(a: jax.Array, *, method: str, tol: float | None) -> WithInfo:
    """exp(a) for a stack of square matrices with the chosen method, and its info."""
    return _REGISTRY[method].expm(a, tol)


def expm_lowrank(u: jax.Array, v: jax.Array, *, method: str, tol: float | None) -> WithInfo:
    """exp(u @ v) for u (..., n, r), v (..., r, n) with the chosen method, and its info.

    The info of jexpm's methods is that of the r x r :func:`jexpm.phi1` evaluation.
    """
    return _REGISTRY[method].expm_lowrank(u, v, tol)


def expm_multiply(a: jax.Array, x: jax.Array, *, method: str, tol: float | None):
    """exp(a) x for a stack of matrices a (..., n, n) and vectors x (..., n), and its info.

    jexpm's methods all compute the action itself (:func:`jexpm.expm_multiply`, info a
    :class:`jexpm.ActionInfo`); the others multiply their exponential with x (info
    ``None``).
    """
    if method in jexpm.METHODS:
        return jexpm.expm_multiply(a, x, tol=tol, return_info=True)
    e, _ = expm(a, method=method, tol=tol)
    return jnp.einsum("...ij,...j->...i", e, x), None


def expm_lowrank_multiply(u: jax.Array, v: jax.Array, x: jax.Array, *, method: str, tol):
    r"""exp(u @ v) x = x + U :math:`\varphi_1`(VU) V x for vectors x (..., n), and its info.

    For jexpm's methods only r x r matrices and vectors are formed (info: the
    :func:`jexpm.phi1` evaluation's); the others multiply their low-rank exponential
    with x.
    """
    if method in jexpm.METHODS:
        m = cast(jexpm.Method, method)
        p, info = jexpm.phi1(v @ u, method=m, tol=tol, return_info=True)
        vx = jnp.einsum("...ij,...j->...i", v, x)
        return x + jnp.einsum("...ij,...j->...i", u, jnp.einsum("...ij,...j->...i", p, vx)), info
    e, _ = expm_lowrank(u, v, method=method, tol=tol)
    return jnp.einsum("...ij,...j->...i", e, x), None
