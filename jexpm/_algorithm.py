"""Batched scaling-and-squaring on (..., n, n) arrays, with no autodiff or vmap rules.

The pieces the approximants of _approximants.py are made of: 1-norms, exact scaling
by powers of two, the choice of order and squarings from norms, the refinement of the
squarings for strongly non-normal input, and the squaring loops.

Selection rule (the authors' rule of [S25], whose sources _coefficients.py lists,
generalised to any tol; the documentation's docs/guides/how_it_works.md states it for
users): with log2
norms l1 = log2||A||_1 and l2 = log2||A2||_1, order m passes when both first
neglected terms are below tol,
log2 b_p + (p // 2) l2 + (p % 2) l1 <= log2 tol for p = m + 1, m + 2. Order 1 is
tried first from ||A|| alone, before A2 is formed. When the top order fails,
s = max_p ceil((log2 b_p + ... - log2 tol) / p).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._products import Matmul, max_axis, sum_axis


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


def select(orders, stored, log2_b, logs: tuple[jax.Array, ...], finite: jax.Array, log2_tol: float):
    """Order index and squarings of each member, for orders >= 2.

    Args:
      orders: the Taylor orders m, cheapest first.
      stored: per order, the highest power A^j its formula stores (m = j k).
      log2_b: per order, log2 of the bounds b_{m+1}, b_{m+2} of the neglected terms.
      logs: per-member log2 of bounds of ||A||_1, ||A^2||_1, ... (+inf for a power
        not formed).
      finite: per member, whether A is finite (``finite_member`` of ``logs[0]``).
      log2_tol: log2 of the tolerance.

    Returns:
      (index, s): int32 index into ``orders`` (at least 1) and int32 squarings, both
      with the batch shape: what each member needs alone. Members with non-finite
      norms get index 1 and s = 0. A batch that shares one order takes the largest index.
    """
    l1, l2 = logs[0], logs[1]

    def log2_err(i: int, p: int, b: float) -> jax.Array:
        # log2 b_p + log2 of the bound ||A^p|| <= ||A2||^(p//2) ||A||^(p%2); terms with
        # a zero exponent are left out so that 0 * (-inf) never appears.
        e = b + (p // 2) * l2
        e = e + l1 if p % 2 else e
        j = stored[i]
        if j <= 2 or j > len(logs):
            return e
        # Where A^j (j > 2) was formed, also the authors' bound for m = j k (Sastre et
        # al. 2025, code hipersc/MatrixFunctions, select_m_s_expm_ps):
        # ||A^(m+1)|| <= ||A^j||^k ||A||, ||A^(m+2)|| <= ||A^j||^k ||A2||.
        k = orders[i] // j
        with_j = b + k * logs[j - 1] + (l1 if p == orders[i] + 1 else l2)
        return jnp.fmin(e, with_j)

    top = len(orders) - 1
    member = jnp.full(l1.shape, top, dtype=jnp.int32)
    errors = {}
    for i in range(top, 0, -1):
        m = orders[i]
        errors[i] = [log2_err(i, m + 1 + j, log2_b[i][j]) for j in range(2)]
        ok = (errors[i][0] <= log2_tol) & (errors[i][1] <= log2_tol)
        member = jnp.where(ok, i, member)
    index = member
    m = orders[top]
    dtype = l1.dtype
    s = jnp.maximum(
        _squarings_for(errors[top][0], log2_tol, m + 1, dtype),
        _squarings_for(errors[top][1], log2_tol, m + 2, dtype),
    )
    # A non-finite member's result is NaN whatever is chosen for it: the lowest order
    # and no squarings, so that it never raises what a batch shares.
    s = jnp.where((index == top) & finite, s, 0)
    index = jnp.where(finite, index, 1)
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


def refine_squarings(orders, log2_b, a, a2, l1, l2, s, log2_tol, matmul: Matmul):
    """A sharper s for the top order from the norms of A^8 and A^9 (see ``refined``)."""
    a4 = matmul(a2, a2)
    a8 = matmul(a4, a4)
    a9 = matmul(a8, a)
    return refined(orders, log2_b, l1, l2, norm1(a8), norm1(a9), s, log2_tol)


def refined(orders, log2_b, l1, l2, n8, n9, s, log2_tol):
    """S for the top order, sharpened by ``n8`` = ||A^8||_1 and ``n9`` = ||A^9||_1.

    The first two neglected powers p in {16, 17, 18} are bounded by products of
    ||A^8|| and ||A^9|| (each no larger than the ||A^2||-based bound), which for
    strongly non-normal A is far smaller and avoids overscaling. Never increases s.
    """
    l8 = jnp.fmin(jnp.log2(n8), 4 * l2)
    l9 = jnp.fmin(jnp.log2(n9), l8 + l1)
    power_bound = {16: 2 * l8, 17: l8 + l9, 18: 2 * l9}
    m = orders[-1]
    sharper = jnp.maximum(
        *(
            _squarings_for(log2_b[-1][j] + power_bound[m + 1 + j], log2_tol, m + 1 + j, l1.dtype)
            for j in range(2)
        )
    )
    return jnp.minimum(s, sharper.astype(s.dtype))


def square(family: str, t: jax.Array, x: jax.Array, s: jax.Array, matmul: Matmul) -> jax.Array:
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


# sinh(h)/h = sum_k h^(2k) / (2k + 1)! for |h| < 1, to k = 9 (the next term is below
# 1/21! < 2e-20). As a polynomial its derivatives of every order are as accurate as its
# value; those of sinh(h)/h cancel catastrophically for small h.
_SINHC = tuple(1 / math.factorial(2 * k + 1) for k in range(10))


def exp_divided_difference(a: jax.Array, c: jax.Array) -> jax.Array:
    """(e^c - e^a) / (c - a), accurate when c is close to a and free of sinh overflow.

    Every branch is finite wherever it is not selected, so derivatives stay finite too.
    """
    h = (c - a) / 2
    close = jnp.abs(h) < 1
    h2 = jnp.where(close, h * h, 0)
    sinhc = _SINHC[-1]
    for coefficient in _SINHC[-2::-1]:
        sinhc = sinhc * h2 + coefficient
    far = (jnp.exp(c) - jnp.exp(a)) / jnp.where(close, 1, c - a)
    return jnp.where(close, jnp.exp((a + c) / 2) * sinhc, far)


def triangular_values(a: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact diagonal and superdiagonal of exp(2^-k A) for upper triangular A.

    Diagonal: exp(2^-k a_ii). Superdiagonal: the 2x2-block value
    2^-k a_{i,i+1} (e^(2^-k a_{i+1,i+1}) - e^(2^-k a_ii)) / (2^-k (a_{i+1,i+1} - a_ii)).
    Only the diagonal and superdiagonal of ``a`` are read.
    """
    x = scale(a, k)
    n = a.shape[-1]
    # Each diagonal read as a masked row sum (exact: the other terms are zeros), which
    # compiles to a smaller program than jnp.diagonal's gather.
    diag = jnp.sum(jnp.where(np.eye(n, dtype=bool), x, 0), axis=-1)
    sup = jnp.sum(jnp.where(np.eye(n, k=1, dtype=bool), x, 0), axis=-1)[..., :-1]
    return jnp.exp(diag), sup * exp_divided_difference(diag[..., :-1], diag[..., 1:])


# The band squaring below also runs on block matrices [[A, E], [0, A]], nested
# ``depth`` times, which is how the derivative rules of _derivatives.py reach every
# order: a function f that maps each such block to [[f(A), Df(A)[E]], [0, f(A)]] has
# its derivatives in its top-right blocks. The band of a block matrix is then the band
# of each n x n block of its upper block triangle, and its exact values are those of
# the depth below and their derivative along E.


def block_upper(a: jax.Array, e: jax.Array) -> jax.Array:
    """[[A, E], [0, A]]."""
    zero = jnp.zeros_like(a)
    top = jnp.concatenate([a, e], axis=-1)
    return jnp.concatenate([top, jnp.concatenate([zero, a], axis=-1)], axis=-2)


def _nested_mask(size: int, depth: int, base) -> np.ndarray:
    if depth == 0:
        return base(size)
    inner = _nested_mask(size // 2, depth - 1, base)
    return np.block([[inner, inner], [np.zeros_like(inner), inner]])


def _band(n: int) -> np.ndarray:
    return np.eye(n, dtype=bool) | np.eye(n, k=1, dtype=bool)


def band_mask(size: int, depth: int) -> np.ndarray:
    """Where ``square_triangular`` sets exact values: the diagonal and superdiagonal."""
    return _nested_mask(size, depth, _band)


def upper_mask(size: int, depth: int) -> np.ndarray:
    """The upper triangle (of every block of the upper block triangle at ``depth``)."""
    return _nested_mask(size, depth, lambda n: np.triu(np.ones((n, n), bool)))


def band_values(a: jax.Array, k: jax.Array, depth: int = 0) -> jax.Array:
    """The exact band of exp(2^-k A) as a matrix (zero off the band), nested ``depth`` times."""
    if depth == 0:
        diag, sup = triangular_values(a, k)
        n = a.shape[-1]
        # Each row's value, placed by masks (a scatter would be a larger program).
        sup = jnp.concatenate([sup, jnp.zeros_like(diag[..., :1])], axis=-1)
        on_sup = jnp.where(np.eye(n, k=1, dtype=bool), sup[..., :, None], 0)
        return jnp.where(np.eye(n, dtype=bool), diag[..., :, None], on_sup)
    n = a.shape[-1] // 2
    inner, tangent = jax.jvp(
        lambda x: band_values(x, k, depth - 1), (a[..., :n, :n],), (a[..., :n, n:],)
    )
    return block_upper(inner, tangent)


def _member(mask: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(mask[..., None, None], new, old)


def where_entries(mask: np.ndarray, new, old: jax.Array) -> jax.Array:
    """``new`` at the entries where the (n, n) ``mask`` is set, ``old`` elsewhere."""
    return jnp.where(np.broadcast_to(mask, old.shape), new, old)


def _triangular_step(t: jax.Array, a: jax.Array, s: jax.Array, depth: int, matmul: Matmul):
    """Step j of ``square_triangular``, for j = -1, 0, ..., max(s) - 1.

    Step -1 sets the exact band of exp(2^-s A) in T (X_0); step j >= 0 squares X_j and
    sets the band of exp(2^-(s-j-1) A) (X_{j+1}), for the members with j < s. One loop
    body holds the band's evaluation, so the program (and its derivatives) holds it
    once; step -1 forms one product that it does not use.
    """
    band = band_mask(a.shape[-1], depth)

    def step(j, x):
        squared = jnp.where(j >= 0, matmul(x, x), t)
        new = where_entries(band, band_values(a, s - j - 1, depth), squared)
        return _member(j < s, new, x)

    return step


def square_triangular(
    t: jax.Array, a: jax.Array, s: jax.Array, depth: int, matmul: Matmul
) -> jax.Array:
    """Squaring that recomputes the diagonal and superdiagonal of upper triangular ``a``.

    X_0 = T with the exact band of exp(2^-s A); X_{j+1} = X_j X_j with the exact band of
    exp(2^-(s-j-1) A) (``band_values``). This removes the error that overscaling would
    otherwise amplify (Al-Mohy and Higham, SIAM J. Matrix Anal. Appl. 31(3), 2009,
    section 2.3 and Code Fragment 2.1). Members with s = 0 get T with the exact band.
    """
    top = jnp.max(s, initial=0)
    return lax.fori_loop(-1, top, _triangular_step(t, a, s, depth, matmul), t)


def square_triangular_transpose(
    t: jax.Array, a: jax.Array, s: jax.Array, depth: int, g: jax.Array, matmul: Matmul
) -> tuple[jax.Array, jax.Array]:
    """The transpose of the tangent of ``square_triangular`` at (t, a), applied to ``g``.

    Returns (g_t, g_a): the cotangents of T and of A (through the exact band). The
    steps run backwards, from j = max(s) - 1 down to -1; each X_j is recomputed from T
    rather than stored, so memory stays that of a few matrices while the products
    grow as s^2 / 2.
    """
    band = band_mask(a.shape[-1], depth)
    step = _triangular_step(t, a, s, depth, matmul)
    top = jnp.max(s, initial=0)

    def body(i, carry):
        g, g_a = carry
        j = top - 1 - i
        active = j < s
        # Through the band set at scale s - j - 1: its cotangent of A, and g without it.
        _, pullback = jax.vjp(lambda a: band_values(a, jnp.maximum(s - j - 1, 0), depth), a)
        (da,) = pullback(where_entries(band, g, jnp.zeros_like(g)))
        h = where_entries(band, 0, g)
        # Through the squaring X_j X_j (step -1 passes T on as it is).
        x = lax.fori_loop(-1, j, step, t)
        xt = jnp.swapaxes(x, -1, -2)
        g_x = jnp.where(j >= 0, matmul(h, xt) + matmul(xt, h), h)
        return _member(active, g_x, g), g_a + _member(active, da, jnp.zeros_like(da))

    return lax.fori_loop(0, top + 1, body, (g, jnp.zeros_like(a)))


def squaring_products(family: str) -> int:
    """Matrix products per squaring step."""
    return 1 if family == "exp" else 2


def finite_member(norm: jax.Array) -> jax.Array:
    """True for members whose norm (or its log) is finite; False for Inf and NaN."""
    return norm < jnp.inf


def batch_all(holds: jax.Array, finite: jax.Array) -> jax.Array:
    """Whether ``holds`` for the whole batch, its members with non-finite input left out.

    Such members give NaN results whatever their path, so they never decide a choice
    the batch shares (the order-1 shortcut, the exact band). ``holds`` has the batch
    shape of ``finite``, or more axes per member after it.
    """
    extra = holds.ndim - finite.ndim
    if extra:
        finite = finite[(..., *(None,) * extra)]
    return jnp.all(holds | ~finite)


def mask_nonfinite(x: jax.Array, finite: jax.Array) -> jax.Array:
    """All-NaN members where ``finite`` is False (``x`` has more axes per member)."""
    return jnp.where(finite.reshape(finite.shape + (1,) * (x.ndim - finite.ndim)), x, jnp.nan)
