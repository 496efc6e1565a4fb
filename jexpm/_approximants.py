"""The approximants: one small interface, three methods, each for exp and phi1.

An approximant of a family (``exp``: sum A^k/k!, ``phi1``: sum A^k/(k+1)!) offers
  * ``compute(a, tol, upper_triangular)``: choose, on device, a :class:`Path` (order
    index and squarings per member) from norms of A, evaluate it, and count products;
  * ``evaluate(a, path, depth)``: the same function of A for a given path (the
    derivative rules of _derivatives.py differentiate exactly this, so that the
    derivative is that of the approximant ``compute`` returned);
  * ``transpose(a, g, path, depth)``: the transpose of that derivative, applied to g;
  * ``order(index)``: the Taylor order (or number of terms) an index stands for.

``Taylor`` covers ``opt15`` (the Sastre formulas) and ``ps`` (Paterson-Stockmeyer):
both pick an order from a table and scale and square. ``Baseline`` is the Taylor
loop of Xiao and Liu (2020) that the paper compares against.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import _algorithm as alg
from . import _coefficients as C
from . import _polynomials as P
from . import _products, _tuning

FAMILIES = ("exp", "phi1")


class Path(NamedTuple):
    """Which function of A an approximant computed, per batch member.

    Attributes:
      index: int32 order index (``Taylor``: into ``orders``; ``Baseline``: the
        number of Taylor terms summed).
      squarings: int32 number of squarings s.
      exact_band: bool, True where the squarings recomputed the diagonal and
        superdiagonal exactly (``square_triangular`` of _algorithm.py).
    """

    index: jax.Array
    squarings: jax.Array
    exact_band: jax.Array


def _transpose(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def by_member(index: jax.Array, branches, *operands) -> jax.Array:
    """``branches[index](*operands)``, each member of the result from its own branch.

    A scalar ``index`` runs one branch (``lax.switch``). A batched one runs each
    branch that some member takes (a ``cond`` per branch, skipping the others) and
    keeps each member's rows of its own: one branch when the batch shares its order,
    and for a batch ordered by its members' orders about one per slice. (One
    ``switch`` for the shared case as well would compile every branch twice, for no
    measurable gain in run time.)
    """
    if index.ndim == 0:
        return lax.switch(index, branches, *operands)
    shape = jax.eval_shape(branches[0], *operands)
    out = jnp.zeros(shape.shape, shape.dtype)
    for i, branch in enumerate(branches):
        here = (index == i)[..., None, None]

        def take(out, branch=branch, here=here):
            return jnp.where(here, branch(*operands), out)

        out = lax.cond(jnp.any(here), take, lambda out: out, out)
    return out


def polynomial_transpose(evaluate: Callable[[jax.Array], jax.Array], a, g) -> jax.Array:
    """The transpose of E -> L(A, E) for a polynomial with real coefficients, at G.

    Under JAX's pairing sum_ij X_ij Y_ij it is G -> L(A^T, G) = L(A, G^T)^T, one more
    forward Frechet evaluation at A itself.
    """
    return _transpose(jax.jvp(evaluate, (a,), (_transpose(g),))[1])


class Approximant(abc.ABC):
    """The protocol of an approximant: four operations and three capabilities.

    The derivative rules (_derivatives.py) and the GPU kernels (_kernel.py) ask these,
    never the approximant's class.

    Operations: ``compute`` chooses the path on device and evaluates it; ``evaluate`` is
    the computed function of A for a given path (what the derivative rules
    differentiate); ``transpose`` the transpose of its tangent; ``order`` the order
    each path index stands for.

    Capabilities:
      member_orders: ``compute(..., per_member=True)`` evaluates each member at its own
        order, so that large batches may be sorted by their members' norms first.
      exact_band: ``compute(..., upper_triangular=...)`` may recompute the band
        (diagonal and superdiagonal) of upper triangular input exactly while squaring;
        its paths say where it did (``Path.exact_band``).
      fused: programs for CUDA GPUs may run it in the fused kernels.
    """

    family: str
    method: str
    product_form: str | None
    tuning: _tuning.Tuning | None
    member_orders: bool = False
    exact_band: bool = False
    fused: bool = False

    @abc.abstractmethod
    def compute(self, a: jax.Array, tol: float, **options) -> tuple[jax.Array, Path, jax.Array]:
        """(result, path, products per member), the path chosen on device.

        ``options`` are those of the capabilities: ``upper_triangular`` where
        ``exact_band``, ``per_member`` where ``member_orders``; the derivative
        rules pass each only to an approximant that has it.
        """

    @abc.abstractmethod
    def evaluate(self, a: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The approximant of ``path`` as a function of ``a``."""

    @abc.abstractmethod
    def transpose(self, a: jax.Array, g: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The transpose of the tangent of ``evaluate`` at ``a``, applied to ``g``."""

    @abc.abstractmethod
    def order(self, index: jax.Array) -> jax.Array:
        """The order (or number of terms) that each path index stands for."""

    def result_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``compute``'s result for input of ``shape`` (the input's own)."""
        return shape

    @property
    def shift(self) -> int:
        """Taylor coefficients are 1/(k + shift)!."""
        return FAMILIES.index(self.family)

    def matmul(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """A matrix product in this approximant's form (or its backend's choice)."""
        return _products.matmul(a, b, self.product_form, self.tuning)


@dataclasses.dataclass(frozen=True, eq=False)
class Taylor(Approximant):
    """Truncated Taylor series chosen from a table of orders, scaled and squared.

    Attributes:
      method: "opt15" or "ps".
      family: "exp" or "phi1".
      orders: the Taylor orders m, cheapest first (15 stands for 15+).
      products: matrix products of each order's evaluation, A2 included.
      first: the order-1 formula, which needs no A2.
      formulas: the formulas of orders[1:], called as f((A, A2, ...), matmul).
      stored: per order, the highest power A^j its formula stores (m = j k; 15+
        counts as j = 2). ``compute`` forms A^j for j > 2 only when the batch reaches
        an order that stores it, and then also bounds with its norm.
      log2_b: per order, log2 of the coefficients bounding the two first neglected
        terms, b_{m+1} and b_{m+2} (b_16 of 15+ is its degree-16 coefficient error).
      product_form: the form of every matrix product (``_products.FORMS``), or None
        for the measured choice per size and backend.
      exact_band: whether ``compute`` may recompute the band of upper triangular
        input exactly while squaring (exp only; False: always the plain squaring,
        and the derivative rules leave the band's branches out of the program).
      fused: whether programs for CUDA GPUs may run it in the fused kernels of
        _kernel.py (False: the XLA path everywhere, for comparisons).
    """

    method: str
    family: str
    orders: tuple[int, ...]
    products: tuple[int, ...]
    first: Callable[[jax.Array], jax.Array]
    formulas: tuple[P.Formula, ...]
    log2_b: tuple[tuple[float, float], ...]
    stored: tuple[int, ...]
    product_form: str | None = None
    tuning: _tuning.Tuning | None = None
    exact_band: bool = True
    fused: bool = True
    member_orders = True

    def order(self, index: jax.Array) -> jax.Array:
        """The Taylor order m of each member (15 stands for 15+)."""
        return jnp.asarray(self.orders, jnp.int32)[index]

    @functools.cached_property
    def _formulas(self) -> tuple[Callable[[tuple[jax.Array, ...]], jax.Array], ...]:
        """The formulas of every order, called on the powers (A, A2, ...)."""
        higher = ((lambda powers, f=f: f(powers, self.matmul)) for f in self.formulas)
        return (lambda powers: self.first(powers[0]), *higher)

    def order1(self, l1: jax.Array, log2_tol: float) -> jax.Array:
        """Whether order 1 passes, from log2 ||A||_1 alone (before A2 is formed)."""
        b2, b3 = self.log2_b[0]
        return (b2 + 2 * l1 <= log2_tol) & (b3 + 3 * l1 <= log2_tol)

    def select(
        self,
        l1: jax.Array,
        n2: jax.Array,
        finite: jax.Array,
        log2_tol: float,
        form: Callable,
        a2: jax.Array | None = None,
    ):
        """(index, s, powers, formed, overflow, l2): the selection, with A^3, ... as needed.

        ``index`` is each member's own (``alg.select``). A^j (j > 2) is formed only
        when some member's order so far stores it: ``form(j, need, previous)``
        returns (A^j or None, ||A^j||_1 per member) for a scalar bool ``need``, from
        ``previous`` = A^(j-1) (``a2``, then what it returned before). The XLA path
        forms it under a ``cond`` (``_next_power``); the GPU kernel's norms are all
        formed already and only read where needed. Its norm then sharpens the bounds
        and the orders are chosen again (never higher). ``finite``: per member,
        whether A is finite. ``formed`` says which powers were (scalar bools, for A^3
        onwards); ``overflow`` marks members with a power whose norm is not finite.
        """
        l2 = jnp.fmin(jnp.log2(n2), 2 * l1).astype(l1.dtype)
        powers, logs, formed, overflow = [], [l1, l2], [], ~(n2 < jnp.inf)
        index, s = alg.select(self.orders, self.stored, self.log2_b, tuple(logs), finite, log2_tol)
        previous = a2
        for j in range(3, max(self.stored) + 1):
            need = jnp.max(index, initial=0) >= self.stored.index(j)
            previous, norm = form(j, need, previous)
            l_power = jnp.fmin(jnp.log2(norm), logs[-1] + l1).astype(l1.dtype)
            powers.append(previous)
            logs.append(jnp.where(need, l_power, jnp.inf))
            formed.append(need)
            overflow = overflow | (need & ~(norm < jnp.inf))
            index, s = alg.select(
                self.orders, self.stored, self.log2_b, tuple(logs), finite, log2_tol
            )
        return index, s, tuple(powers), tuple(formed), overflow, l2

    @staticmethod
    def refines(l1: jax.Array, l2: jax.Array, s: jax.Array) -> jax.Array:
        """Whether the batch sharpens s with ||A^8|| and ||A^9|| (``alg.refined``)."""
        return jnp.any((s > alg.REFINE_MIN_SQUARINGS) & (2 * l1 - l2 > alg.REFINE_GAP_BITS))

    def compute(
        self,
        a: jax.Array,
        tol: float,
        upper_triangular: bool | None = None,
        per_member: bool = False,
    ):
        """Choose the path on device and evaluate it.

        The steps: the 1-norms of A and which members are finite; then, unless every
        finite member passes order 1 (``_order1``), the higher orders
        (``_higher_orders``): A2 and the powers the selection reads, the order and
        squarings, the refinement of s, the scaled powers, the formulas per member
        and the squaring, with the count of products; last, NaN for the members with
        a non-finite entry.

        Batches where no member needs scaling skip the scaling, the squaring loop and
        its checks altogether: on flow-sized batches each of those is a pass over the
        data.

        Args:
          a: (..., n, n) matrices in the working dtype.
          tol: the truncation tolerance.
          upper_triangular: where ``exact_band``: None: square with the exact band
            when the whole batch is upper triangular (checked on device); True:
            always (the caller promises upper triangular input).
          per_member: False: the batch shares the highest order any member needs;
            True: each member is evaluated at its own order (``by_member``: cheap
            for a batch ordered by the members' norms, every order present for
            one that is not).

        Returns:
          (result, path, products): the approximant, its :class:`Path` and the matrix
          products used, per member; all-NaN results for members with a non-finite
          entry.
        """
        log2_tol = math.log2(tol)
        l1 = jnp.log2(alg.norm1(a))
        finite = alg.finite_member(l1)
        order1 = self.order1(l1, log2_tol)
        # Non-finite members (NaN results whatever their path) never decide for the batch.
        result, path, products = lax.cond(
            alg.batch_all(order1, finite),
            lambda: self._order1(a),
            lambda: self._higher_orders(
                a, l1, finite, order1, log2_tol, upper_triangular, per_member
            ),
        )
        return alg.mask_nonfinite(result, finite), path, products

    def _order1(self, a: jax.Array) -> tuple[jax.Array, Path, jax.Array]:
        """(result, path, products) of order 1 for every member: no A2, no scaling."""
        zeros = jnp.zeros(a.shape[:-2], jnp.int32)
        return self.first(a), Path(zeros, zeros, zeros.astype(bool)), zeros

    def _higher_orders(
        self,
        a: jax.Array,
        l1: jax.Array,
        finite: jax.Array,
        order1: jax.Array,
        log2_tol: float,
        upper_triangular: bool | None,
        per_member: bool,
    ) -> tuple[jax.Array, Path, jax.Array]:
        """(result, path, products) of a batch that needs an order above 1.

        ``l1``: log2 ||A||_1; ``finite`` and ``order1``: per member, whether A is
        finite and whether order 1 passes; the rest as in ``compute``.
        """
        a2 = self.matmul(a, a)
        index, s, higher, formed, overflow, l2 = self.select(
            l1, alg.norm1(a2), finite, log2_tol, functools.partial(self._next_power, a), a2
        )
        powers = (a, a2, *higher)
        index = jnp.where(order1, 0, index) if per_member else jnp.max(index, initial=1)
        s, refine = self._refine(a, a2, l1, l2, s, log2_tol)
        # Batches where no member needs scaling skip the scaling and the squaring loop;
        # the formulas are built once, after the choice of their arguments.
        scaled = jnp.any(s > 0)
        # A power overflowed although A is finite (its norm is not finite): form the
        # powers again from the scaled A.
        redo = scaled & jnp.any(overflow & finite)
        again = (jnp.bool_(True), *formed)
        xs = lax.cond(scaled, lambda: self._scaled_powers(powers, s, redo, again), lambda: powers)
        t = by_member(index, self._formulas, xs)
        t, exact_band = lax.cond(
            scaled,
            lambda t: self._square(t, xs[0], a, s, upper_triangular, finite),
            lambda t: (t, jnp.bool_(False)),
            t,
        )
        products = self._count_products(index, s, refine, redo, again)
        batch = l1.shape
        path = Path(jnp.broadcast_to(index, batch), s, jnp.full(batch, exact_band))
        return t, path, products

    def _next_power(self, a: jax.Array, j: int, need: jax.Array, previous: jax.Array):
        """(A^j, ||A^j||_1) = (A^(j-1) A, its norm) where ``need``, else zeros (a ``cond``)."""
        del j

        def formed():
            power = self.matmul(previous, a)
            return power, alg.norm1(power)

        def skipped():
            return jnp.zeros_like(a), jnp.zeros(a.shape[:-2], alg.real_dtype(a))

        return lax.cond(need, formed, skipped)

    def _refine(self, a, a2, l1, l2, s, log2_tol: float) -> tuple[jax.Array, jax.Array]:
        """(s, refine): s sharpened by ||A^8|| and ||A^9|| where the batch ``refines``."""
        refine = self.refines(l1, l2, s)
        s = lax.cond(
            refine,
            lambda: alg.refine_squarings(
                self.orders, self.log2_b, a, a2, l1, l2, s, log2_tol, self.matmul
            ),
            lambda: s,
        )
        return s, refine

    def _scaled_powers(self, powers, s, redo, again) -> tuple[jax.Array, ...]:
        """The powers (X, X2, ...) of X = 2^-s A, from the powers (A, A2, ...).

        Each A^j rescaled by 2^-js (exact), or where ``redo`` (a power of a finite A
        overflowed) formed again from X (``_powers_of``).
        """
        x = alg.scale(powers[0], s)
        return lax.cond(
            redo,
            lambda: self._powers_of(x, again),
            lambda: tuple(alg.scale(p, (j + 1) * s) for j, p in enumerate(powers)),
        )

    def _powers_of(self, x: jax.Array, again) -> tuple[jax.Array, ...]:
        """(X, X^2, ...): X^(j+1) = X^j X where ``again[j - 1]`` (a ``cond``), else zeros."""
        out = [x]
        for need in again:
            previous = out[-1]
            out.append(
                lax.cond(
                    need,
                    lambda previous=previous: self.matmul(previous, x),
                    lambda: jnp.zeros_like(x),
                )
            )
        return tuple(out)

    def _count_products(self, index, s, refine, redo, again) -> jax.Array:
        """Matrix products per member.

        The formula's (A2 included), the squarings', the refinement's and those of
        the powers formed again.
        """
        redo_products = redo.astype(jnp.int32) * sum(f.astype(jnp.int32) for f in again)
        return (
            jnp.asarray(self.products, jnp.int32)[index]
            + alg.squaring_products(self.family) * s
            + redo_products
            + alg.REFINE_PRODUCTS * refine.astype(jnp.int32)
        )

    def _square(self, t, x, a, s, upper_triangular: bool | None, finite: jax.Array):
        """(T squared s times, whether the exact band was recomputed).

        The band is recomputed where the approximant has ``exact_band`` and the input
        is upper triangular: promised (``upper_triangular=True``), or checked on
        device for the whole batch (None).
        """
        if not self.exact_band:
            return alg.square(self.family, t, x, s, self.matmul), jnp.bool_(False)
        if upper_triangular:
            return alg.square_triangular(t, a, s, 0, self.matmul), jnp.bool_(True)
        return lax.cond(
            alg.batch_all(jnp.tril(a, -1) == 0, finite),
            lambda: (alg.square_triangular(t, a, s, 0, self.matmul), jnp.bool_(True)),
            lambda: (alg.square(self.family, t, x, s, self.matmul), jnp.bool_(False)),
        )

    def polynomial(self, x: jax.Array, index: jax.Array) -> jax.Array:
        """T_m(X), each member at the order of its ``index``."""
        branches = [lambda: self.first(x)] + [
            (lambda f=f: f((x, self.matmul(x, x)), self.matmul)) for f in self.formulas
        ]
        return by_member(index, branches)

    def _plain(self, a: jax.Array, path: Path) -> jax.Array:
        """T_m(2^-s A), squared s times: a polynomial in A."""
        x = alg.scale(a, path.squarings)
        t = self.polynomial(x, path.index)
        return alg.square(self.family, t, x, path.squarings, self.matmul)

    def evaluate(self, a: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The approximant of ``path`` as a function of A, which the derivative rules differentiate.

        On plain paths it is T_m(2^-s A) squared s times. On ``exact_band`` paths
        ``compute`` also recomputed the band exactly after every squaring, a function
        fb of the upper triangle only; off upper triangular input the polynomial P of
        the same order and squarings carries on: f(A) = fb(U) + P(A) - P(U), U the
        upper triangle of A. f is the computed value at the computed point, its
        derivative along upper triangular directions is that of fb, and along the
        others that of P, an approximation of the exponential's own.

        ``depth`` > 0 evaluates the same function on nested block matrices
        [[A, E], [0, A]] (see _algorithm.py), for the derivative rules.
        """
        result = self._plain(a, path)
        if not self.exact_band:
            return result

        def with_band(result):
            upper = alg.where_entries(alg.upper_mask(a.shape[-1], depth), a, jnp.zeros_like(a))
            x = alg.scale(upper, path.squarings)
            t = self.polynomial(x, path.index)
            exact = alg.square_triangular(t, upper, path.squarings, depth, self.matmul)
            change = exact - alg.square(self.family, t, x, path.squarings, self.matmul)
            return result + jnp.where(path.exact_band[..., None, None], change, 0)

        return lax.cond(jnp.any(path.exact_band), with_band, lambda result: result, result)

    def transpose(self, a: jax.Array, g: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The transpose of the tangent of ``evaluate`` at ``a``, applied to ``g``.

        The polynomial part by ``polynomial_transpose``; the band part by running the
        squarings backwards (``square_triangular_transpose``). At ``depth`` 0 an
        exact-band path's A is upper triangular (checked on device, or promised by
        ``upper_triangular=True``), so U = A and the transpose of P at U is the plain
        result already formed; only the nested block matrices of higher derivatives
        need it formed again.
        """
        result = polynomial_transpose(lambda x: self._plain(x, path), a, g)
        if not self.exact_band:
            return result

        def with_band(result):
            mask = alg.upper_mask(a.shape[-1], depth)
            upper = alg.where_entries(mask, a, jnp.zeros_like(a))
            s = path.squarings
            x = alg.scale(upper, s)
            t = self.polynomial(x, path.index)
            g_t, g_a = alg.square_triangular_transpose(t, upper, s, depth, g, self.matmul)
            g_x = polynomial_transpose(lambda x: self.polynomial(x, path.index), x, g_t)
            exact = g_a + alg.scale(g_x, s)
            if depth:
                change = exact - polynomial_transpose(lambda x: self._plain(x, path), upper, g)
            else:
                change = exact - result
            change = alg.where_entries(mask, change, jnp.zeros_like(change))
            return result + jnp.where(path.exact_band[..., None, None], change, 0)

        return lax.cond(jnp.any(path.exact_band), with_band, lambda result: result, result)


def _log2_b(orders: tuple[int, ...], shift: int, b16: float | None) -> tuple:
    out = []
    for m in orders:
        b = [C.log2_inverse_factorial(p + shift) for p in (m + 1, m + 2)]
        if m == 15 and b16 is not None:
            b[0] = b16
        out.append(tuple(b))
    return tuple(out)


def _opt15(family: str) -> Taylor:
    shift = FAMILIES.index(family)
    tay = P.taylor(2, shift)
    c4, c8, c15, b16 = {
        "exp": (C.EXP_4, C.EXP_8, C.EXP_15, C.LOG2_B16_EXP),
        "phi1": (C.PHI1_4, C.PHI1_8, C.PHI1_15, C.LOG2_B16_PHI1),
    }[family]
    orders = (1, 2, 4, 8, 15)
    return Taylor(
        method="opt15",
        family=family,
        orders=orders,
        products=(0, 1, 2, 3, 4),
        first=P.linear(tay[0], tay[1]),
        formulas=(P.quadratic(tay), P.sastre4(c4), P.sastre8(c8), P.sastre15(c15)),
        log2_b=_log2_b(orders, shift, b16),
        stored=(1, 2, 2, 2, 2),
        exact_band=family == "exp",
    )


def _ps(family: str) -> Taylor:
    shift = FAMILIES.index(family)
    orders = (1, 2, 4, 6, 9, 12, 16)
    tay = P.taylor(1, shift)
    return Taylor(
        method="ps",
        family=family,
        orders=orders,
        products=(0, 1, 2, 3, 4, 5, 6),
        first=P.linear(tay[0], tay[1]),
        formulas=tuple(P.paterson_stockmeyer(P.taylor(m, shift)) for m in orders[1:]),
        log2_b=_log2_b(orders, shift, None),
        # q = ceil(sqrt(m)) stored powers, as in the authors' J (hipersc/MatrixFunctions).
        stored=(1, 2, 2, 3, 3, 4, 4),
        exact_band=family == "exp",
    )


TAYLOR: dict[tuple[str, str], Taylor] = {
    (method, family): make(family)
    for method, make in (("opt15", _opt15), ("ps", _ps))
    for family in FAMILIES
}


# ---------------------------------------------------------------------------------
# The baseline of Xiao and Liu (ICML 2020, code changyi7231/MEF, ``expm``/``series``):
# scale so that ||X|| <= 1/2, add Taylor terms t_k = X t_{k-1} / k until
# ||t_k|| <= tol (one product per term), then square. Their ``series`` (phi1) does
# not scale; here it scales like ``expm`` and doubles back with the phi1 recurrence,
# so that large norms stay accurate and the loop stays short.

# The loop stops after this many terms; with the scaled norm <= 1/2 the term then is
# below 0.5**200 / 200!, far under any representable tolerance.
BASELINE_MAX_TERMS = 200


@dataclasses.dataclass(frozen=True, eq=False)
class Baseline(Approximant):
    """The Taylor loop of Xiao and Liu (2020): sum terms until one is below tol.

    Its path index is the number of terms summed, per member.
    """

    family: str
    method: str = "baseline"
    product_form: str | None = None
    tuning: _tuning.Tuning | None = None

    def order(self, index: jax.Array) -> jax.Array:
        """The number of Taylor terms summed."""
        return index

    def _scaling(self, a1: jax.Array) -> jax.Array:
        s = jnp.where(a1 > 0.5, jnp.ceil(jnp.log2(a1)) + 1, 0)
        s = jnp.where(jnp.isfinite(s), s, 0)
        return jnp.clip(s, 0, alg.max_squarings(a1.dtype)).astype(jnp.int32)

    def _first_term(self, x: jax.Array) -> jax.Array:
        return x / (1 + self.shift)

    def _next_term(self, x: jax.Array, t: jax.Array, j) -> jax.Array:
        """Term j + 1 from term j."""
        return self.matmul(x, t) / (j + 1 + self.shift).astype(x.dtype)

    def compute(self, a: jax.Array, tol: float):
        """Sum terms until each member's last is below tol; see ``Taylor.compute``."""
        a1 = alg.norm1(a)
        finite = alg.finite_member(a1)
        s = self._scaling(a1)
        x = alg.scale(a, s)
        t = self._first_term(x)
        active = alg.norm1(t) > tol

        def cond(carry):
            _, _, active, _, j = carry
            return jnp.any(active) & (j <= BASELINE_MAX_TERMS)

        def body(carry):
            total, t, active, terms, j = carry
            total = total + jnp.where(active[..., None, None], t, 0)
            terms = terms + active.astype(terms.dtype)
            t = self._next_term(x, t, j)
            active = active & (alg.norm1(t) > tol)
            return total, t, active, terms, j + 1

        init = (alg.identity_like(a), t, active, jnp.zeros(a1.shape, jnp.int32), jnp.int32(1))
        total, _, _, terms, _ = lax.while_loop(cond, body, init)
        result = alg.square(self.family, total, x, s, self.matmul)
        products = terms + alg.squaring_products(self.family) * s
        path = Path(terms, s, jnp.zeros(s.shape, bool))
        return alg.mask_nonfinite(result, finite), path, products

    def evaluate(self, a: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The sum ``compute`` formed, for given per-member terms and squarings.

        A polynomial in A, so the same function on the block matrices of any ``depth``.
        """
        del depth
        terms, s, _ = path
        x = alg.scale(a, s)

        def body(j, carry):
            total, t = carry
            total = total + jnp.where((j <= terms)[..., None, None], t, 0)
            return total, self._next_term(x, t, j)

        init = (alg.identity_like(a), self._first_term(x))
        total, _ = lax.fori_loop(1, jnp.max(terms, initial=0) + 1, body, init)
        return alg.square(self.family, total, x, s, self.matmul)

    def transpose(self, a: jax.Array, g: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The transpose of the tangent of ``evaluate`` at ``a``, applied to ``g``."""
        return polynomial_transpose(lambda x: self.evaluate(x, path, depth), a, g)


#: Every (method, family) pair, built once.
APPROXIMANTS: dict[tuple[str, str], Taylor | Baseline] = {
    **TAYLOR,
    **{("baseline", family): Baseline(family) for family in FAMILIES},
}


@functools.cache
def approximant(
    method: str,
    family: str,
    product_form: str | None = None,
    exact_band: bool = True,
    fused: bool = True,
    tuning: _tuning.Tuning | None = None,
) -> Approximant:
    """The approximant of ``method`` and ``family``, with every product in ``product_form``.

    ``exact_band=False``: a Taylor approximant that never recomputes the band of
    triangular input (``Taylor.exact_band``). ``tuning``: the backend's tuning, looked
    up once per call (``_tuning.for_backend()``) and carried by the approximant: its
    product form where ``product_form`` is None, and how the derivative rules slice
    and order a batch. One object per argument tuple (a tuning counts by value), so
    that compiled functions keyed on it are shared.
    """
    base = APPROXIMANTS[method, family]
    changes: dict = {}
    if tuning is not None:
        changes["tuning"] = tuning
    if product_form is not None:
        changes["product_form"] = _products.check_form(product_form)
    if not exact_band and isinstance(base, Taylor):
        changes["exact_band"] = False
    if not fused and isinstance(base, Taylor):
        changes["fused"] = False
    return dataclasses.replace(base, **changes) if changes else base
