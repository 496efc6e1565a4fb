"""Evaluation formulas for the Taylor-type approximants (the scaled polynomial T_m).

Each formula takes the powers (A, A2, ...) of the scaled matrix already formed (and
counted) by the caller, at least A and A2, and the product to use
(``_products.matmul`` in a chosen form), and returns T_m(A). Paterson-Stockmeyer forms
the higher powers it needs and was not given. Coefficients come from _coefficients.py;
the shapes are those of [S18]/[S25] (opt15) and of Paterson and Stockmeyer (1973)
(ps). The number of products a formula uses, A2 included, is in ``Scheme.products``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ._products import Matmul

Formula = Callable[[Sequence[jax.Array], Matmul], jax.Array]


# The formulas run on arrays and on the GPU kernel's tiles (``_kernel.Tile``: one
# matrix per lane, entry by entry), which bring their own identity.


def _plus_identity(x, c: float):
    """X + c I."""
    if not isinstance(x, jax.Array):
        return x.plus_identity(c)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return x + jnp.broadcast_to(c * eye, x.shape)


def _identity_like(x):
    """I with the shape of x."""
    if not isinstance(x, jax.Array):
        return x.identity_like()
    return jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)


def linear(c0: float, c1: float) -> Callable[[jax.Array], jax.Array]:
    """Order 1: c0 I + c1 A (no product, no A2)."""
    return lambda a: _plus_identity(c1 * a, c0)


def quadratic(c: Sequence[float]) -> Formula:
    """Order 2: c0 I + c1 A + c2 A2."""
    return lambda powers, matmul: _plus_identity(c[1] * powers[0] + c[2] * powers[1], c[0])


def sastre4(c: Sequence[float]) -> Formula:
    """Order 4: ((c5 A2 + A) c4 + I)(c3 A2) + c2 A + c1 I (one product)."""

    def formula(powers: Sequence[jax.Array], matmul: Matmul) -> jax.Array:
        a, a2 = powers[0], powers[1]
        left = _plus_identity((c[4] * a2 + a) * c[3], 1.0)
        return _plus_identity(matmul(left, c[2] * a2) + c[1] * a, c[0])

    return formula


def sastre8(c: Sequence[float]) -> Formula:
    """Order 8 [S18, eq. (35)]: two products after A2."""
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = c

    def formula(powers: Sequence[jax.Array], matmul: Matmul) -> jax.Array:
        a, a2 = powers[0], powers[1]
        y0 = matmul(a2, c1 * a2 + c2 * a)
        t = matmul(y0 + c3 * a2 + c4 * a, y0 + c5 * a2)
        return _plus_identity(t + c6 * y0 + c7 * a2 + c8 * a, c9)

    return formula


def sastre15(c: Sequence[float]) -> Formula:
    """Order 15+ [S18, Table 7; S25]: three products after A2, exact to degree 15."""
    c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16 = c

    def formula(powers: Sequence[jax.Array], matmul: Matmul) -> jax.Array:
        a, a2 = powers[0], powers[1]
        y0 = matmul(a2, c1 * a2 + c2 * a)
        y1 = matmul(y0 + c3 * a2 + c4 * a, y0 + c5 * a2) + c6 * y0 + c7 * a2
        # The tail and the two last factors are combined as soon as y1 exists, so that
        # A, A2 and y0 (and, in the derivative, their tangents) die before the product.
        tail = _plus_identity(c12 * y1 + c13 * y0 + c14 * a2 + c15 * a, c16)
        return matmul(y1 + c8 * a2 + c9 * a, y1 + c10 * y0 + c11 * a) + tail

    return formula


def paterson_stockmeyer(coeffs: Sequence[float]) -> Formula:
    """sum_k coeffs[k] A^k by Paterson-Stockmeyer with q = ceil(sqrt(m)) stored powers.

    With m = r q, p(A) = sum_j B_j (A^q)^j where B_j = sum_{i<q} c_{jq+i} A^i and the
    top block also takes c_m A^q. Costs (q - 1) products for A^2..A^q (A^2 given,
    counted) and r - 1 Horner steps: 1, 2, 3, 4, 5, 6 for m = 2, 4, 6, 9, 12, 16.
    Powers up to A^q that the caller formed already (for the selection) are used as
    given.
    """
    m = len(coeffs) - 1
    q = math.isqrt(m - 1) + 1
    r, rem = divmod(m, q)
    if m < 2 or rem:
        raise ValueError(f"Paterson-Stockmeyer needs q | m with m >= 2, got m={m}")

    def formula(given: Sequence[jax.Array], matmul: Matmul) -> jax.Array:
        powers = [_identity_like(given[0]), *given[:q]]
        while len(powers) <= q:
            powers.append(matmul(powers[-1], given[0]))

        def block(j: int) -> jax.Array:
            top = q if j == r - 1 else q - 1
            return sum(
                (coeffs[j * q + i] * powers[i] for i in range(1, top + 1)),
                start=coeffs[j * q] * powers[0],
            )

        result = block(r - 1)
        for j in range(r - 2, -1, -1):
            result = block(j) + matmul(powers[q], result)
        return result

    return formula


def taylor(order: int, shift: int) -> tuple[float, ...]:
    """Taylor coefficients 1/(k+shift)! for k = 0..order (shift 0: exp, 1: phi1)."""
    return tuple(1.0 / math.factorial(k + shift) for k in range(order + 1))
