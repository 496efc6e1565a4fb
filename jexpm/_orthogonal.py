"""Orthogonal (unitary) matrices as exponentials of skew-symmetric (skew-Hermitian) ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._expm import expm
from ._options import Method, as_inexact, check_numeric, check_square
from ._products import max_axis, sum_axis


def orthogonal(
    s: ArrayLike,
    *,
    max_norm: float | None = None,
    tol: float | None = None,
    method: Method = "opt15",
) -> jax.Array:
    r"""Orthogonal (unitary) matrix :math:`Q = e^{K}` with :math:`K = S - S^H`.

    Any square parameter S gives an exactly orthogonal Q (unitary for complex S), up
    to rounding, and every rotation is reached with :math:`\|K\|_2 \le \pi`; the map is
    smooth, so optimisers see a flat geometry (unlike the Cayley transform). For a
    block-diagonal Q pass the blocks as a batch, shape (..., k, b, b).

    Args:
      s: unconstrained parameter of shape (..., n, n), any float or complex dtype
        accepted by :func:`jexpm.expm` (bfloat16 and float16 included).
      max_norm: optional limit on the rotation: K is scaled down, per matrix, so that
        its 1-norm (an upper bound on its spectral norm, the largest rotation angle)
        is at most ``max_norm``.
      tol: tolerance, as in :func:`jexpm.expm`.
      method: method, as in :func:`jexpm.expm`.

    Returns:
      Q = exp(K), shape and dtype of ``s``.

    Raises:
      ValueError: ``s`` is not (..., n, n) or ``max_norm`` is not positive.
      TypeError: as :func:`jexpm.expm`.

    Examples:
      >>> import jax, jax.numpy as jnp, jexpm
      >>> q = jexpm.orthogonal(jax.random.normal(jax.random.key(0), (5, 5)))
      >>> bool(jnp.allclose(q.T @ q, jnp.eye(5), atol=1e-5))
      True
    """
    check_numeric("orthogonal", s=s)
    (s,) = as_inexact(s)
    check_square(s, "s", "orthogonal")
    k = s - jnp.conj(jnp.swapaxes(s, -1, -2))
    if max_norm is not None:
        if not max_norm > 0:
            raise ValueError(f"orthogonal: max_norm must be positive, got {max_norm}")
        if k.shape[-1]:
            norm = max_axis(sum_axis(jnp.abs(k), -2), -1)
            factor = jnp.minimum(1, max_norm / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
            k = k * factor[..., None, None].astype(k.dtype)
    # K is skew-Hermitian: upper triangular only where diagonal, which the plain
    # squaring handles as well; no triangular check, and a smaller gradient program.
    return expm(k, upper_triangular=False, tol=tol, method=method)
