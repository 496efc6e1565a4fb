"""Batched scaling-and-squaring on (..., n, n) arrays, with no autodiff or vmap rules.

The pieces the approximants of _approximants.py are made of: 1-norms, exact scaling
by powers of two, the choice of order and squarings from norms, the refinement of the
squarings for strongly non-normal input, and the squaring loops.

Selection rule (the authors' rule of [S25], whose sources _coefficients.py lists,
generalised to any tol; the README's "How it works" states it for users): with log2
norms l1 = log2||A||_1 and l2 = log2||A2||_1, order m passes when both first
neglected terms are below tol,
log2 b_p + (p // 2) l2 + (p % 2) l1 <= log2 tol for p = m + 1, m + 2. Order 1 is
tried first from ||A|| alone, before A2 is formed. When the top order fails,
s = max_p ceil((log2 b_p + ... - log2 tol) / p).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._products import matmul, max_axis, sum_axis


def norm1(x: jax.Array) -> jax.Array:
    """Per-member matrix 1-norm (largest absolute column sum); NaN if any entry is."""
    return max_axis(sum_axis(jnp.abs(x), -2), -1)


def real_dtype(x: jax.Array) -> np.dtype:
    return np.finfo(x.dtype).dtype


def identity_like(x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)


def scale(x: jax.Array, s: jax.Array, core_ndim: int = 2) -> jax.Array:
    """X * 2**(-s) per member, exactly (two factors, so neither leaves the normal range).

    ``s`` has the batch shape; ``core_ndim`` trailing axes of ``x`` are per member.
    """
    rdt = real_dtype(x)
    half = s // 2
    expand = (...,) + (None,) * core_ndim
    f1 = jnp.exp2(-half.astype(rdt))[expand].astype(x.dtype)
    f2 = jnp.exp2(-(s - half).astype(rdt))[expand].astype(x.dtype)
    return (x * f1) * f2


def max_squarings(dtype: np.dtype) -> int:
    """An upper bound on s for any finite input (for the integer conversion only)."""
    return 2 * (int(np.finfo(dtype).maxexp) - 8)


def _squarings_for(log2_err: jax.Array, log2_tol: float, p: int, dtype) -> jax.Array:
    s = jnp.ceil((log2_err - log2_tol) / p)
    return jnp.clip(s, 0, max_squarings(dtype))


def select(orders, log2_b, l1: jax.Array, l2: jax.Array, log2_tol: float):
    """Order index (shared by the batch) and squarings (per member) for orders >= 2.

    Args:
      orders: the Taylor orders m, cheapest first.
      log2_b: per order, log2 of the bounds b_{m+1}, b_{m+2} of the neglected terms.
      l1: per-member log2 of ||A||_1.
      l2: per-member log2 of the bound used for ||A^2||_1.
      log2_tol: log2 of the tolerance.

    Returns:
      (index, s): scalar int32 index into ``orders`` and int32 squarings with
      the batch shape. Members with non-finite norms get s = 0.
    """

    def log2_err(p: int, b: float) -> jax.Array:
        # log2 b_p + log2 of the bound ||A^p|| <= ||A2||^(p//2) ||A||^(p%2); terms with
        # a zero exponent are left out so that 0 * (-inf) never appears.
        e = b + (p // 2) * l2
        return e + l1 if p % 2 else e

    top = len(orders) - 1
    member = jnp.full(l1.shape, top, dtype=jnp.int32)
    errors = {}
    for i in range(top, 0, -1):
        m = orders[i]
        errors[i] = [log2_err(m + 1 + j, log2_b[i][j]) for j in range(2)]
        ok = (errors[i][0] <= log2_tol) & (errors[i][1] <= log2_tol)
        member = jnp.where(ok, i, member)
    index = jnp.max(member, initial=1)
    m = orders[top]
    dtype = l1.dtype
    s = jnp.maximum(
        _squarings_for(errors[top][0], log2_tol, m + 1, dtype),
        _squarings_for(errors[top][1], log2_tol, m + 2, dtype),
    )
    s = jnp.where((index == top) & (l1 < jnp.inf), s, 0)
    return index.astype(jnp.int32), s.astype(jnp.int32)


# A batch refines its squarings with the norms of A^8 and A^9 (three more products)
# when some member is strongly non-normal, 2 log2||A|| - log2||A^2|| > REFINE_GAP_BITS,
# and was going to be squared more than REFINE_MIN_SQUARINGS times, so that the saved
# squarings can repay the products. Random dense matrices stay far below the gap
# (about 2.5 bits at n = 48, 4.3 at n = 512); Moler's badly scaled 3x3 has 28 bits
# and drops from 22 squarings to 11.
REFINE_GAP_BITS = 5.0
REFINE_MIN_SQUARINGS = 6
REFINE_PRODUCTS = 3


def refine_squarings(orders, log2_b, a, a2, l1, l2, s, log2_tol):
    """A sharper s for the top order from the norms of A^8 and A^9.

    The first two neglected powers p in {16, 17, 18} are bounded by products of
    ||A^8|| and ||A^9|| (each no larger than the ||A^2||-based bound), which for
    strongly non-normal A is far smaller and avoids overscaling. Never increases s.
    """
    a4 = matmul(a2, a2)
    a8 = matmul(a4, a4)
    a9 = matmul(a8, a)
    l8 = jnp.fmin(jnp.log2(norm1(a8)), 4 * l2)
    l9 = jnp.fmin(jnp.log2(norm1(a9)), l8 + l1)
    power_bound = {16: 2 * l8, 17: l8 + l9, 18: 2 * l9}
    m = orders[-1]
    refined = jnp.maximum(
        *(
            _squarings_for(log2_b[-1][j] + power_bound[m + 1 + j], log2_tol, m + 1 + j, l1.dtype)
            for j in range(2)
        )
    )
    return jnp.minimum(s, refined.astype(s.dtype))


def square(family: str, t: jax.Array, x: jax.Array, s: jax.Array) -> jax.Array:
    """Undo the scaling: s_i squaring steps on member i, one loop to the largest s.

    exp: T <- T T. phi1: phi1(2X) = phi1(X) + phi1(X) X phi1(X) / 2, with X doubling.
    """
    batched = s.ndim > 0

    def keep(i, new, old):
        return jnp.where((i < s)[..., None, None], new, old) if batched else new

    if family == "exp":

        def body(i, t):
            return keep(i, matmul(t, t), t)

        return lax.fori_loop(0, jnp.max(s, initial=0), body, t)

    def body_phi1(i, carry):
        p, xk = carry
        new = p + 0.5 * matmul(p, matmul(xk, p))
        return keep(i, new, p), keep(i, 2 * xk, xk)

    return lax.fori_loop(0, jnp.max(s, initial=0), body_phi1, (t, x))[0]


def _exp_divided_difference(a: jax.Array, c: jax.Array) -> jax.Array:
    """(e^c - e^a) / (c - a), accurate when c is close to a and free of sinh overflow."""
    h = (c - a) / 2
    close = jnp.abs(h) < 1
    h_close = jnp.where(close, h, 1)
    sinhc = jnp.where(h == 0, 1, jnp.sinh(h_close) / h_close)
    far = (jnp.exp(c) - jnp.exp(a)) / jnp.where(close, 1, c - a)
    return jnp.where(close, jnp.exp((a + c) / 2) * sinhc, far)


def square_triangular(t: jax.Array, a: jax.Array, s: jax.Array) -> jax.Array:
    """Squaring for upper triangular ``a``, recomputing the diagonal and superdiagonal.

    After each squaring the current matrix approximates exp(2^-k A); its diagonal is
    set to exp(2^-k a_ii) and its superdiagonal to the exact 2x2-block value
    2^-k a_{i,i+1} (e^(2^-k a_{i+1,i+1}) - e^(2^-k a_ii)) / (2^-k (a_{i+1,i+1} - a_ii)).
    This removes the error that overscaling would otherwise amplify (Al-Mohy and
    Higham, SIAM J. Matrix Anal. Appl. 31(3), 2009, section 2.3 and Code Fragment 2.1).
    """
    n = a.shape[-1]
    i = jnp.arange(n)
    diag = jnp.diagonal(a, axis1=-2, axis2=-1)
    sup = jnp.diagonal(a, offset=1, axis1=-2, axis2=-1)

    def exact(x, k):
        d = scale(diag, k, core_ndim=1)
        x = x.at[..., i, i].set(jnp.exp(d))
        b = scale(sup, k, core_ndim=1)
        return x.at[..., i[:-1], i[1:]].set(b * _exp_divided_difference(d[..., :-1], d[..., 1:]))

    batched = s.ndim > 0

    def body(j, x):
        new = exact(matmul(x, x), s - j - 1)
        return jnp.where((j < s)[..., None, None], new, x) if batched else new

    return lax.fori_loop(0, jnp.max(s, initial=0), body, exact(t, s))


def squaring_products(family: str) -> int:
    """Matrix products per squaring step."""
    return 1 if family == "exp" else 2


def finite_member(norm: jax.Array) -> jax.Array:
    """True for members whose norm (or its log) is finite; False for Inf and NaN."""
    return norm < jnp.inf


def mask_nonfinite(x: jax.Array, finite: jax.Array) -> jax.Array:
    """All-NaN matrices where ``finite`` is False."""
    return jnp.where(finite[..., None, None], x, jnp.nan)
