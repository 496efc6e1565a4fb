"""The approximation schemes: which orders exist, how each is evaluated, what it costs.

A scheme pairs a family (``exp``: sum A^k/k!, ``phi1``: sum A^k/(k+1)!) with a way of
evaluating its Taylor polynomials (``opt15``: the Sastre formulas, ``ps``:
Paterson-Stockmeyer). Order selection (_selection.py) only needs, per order, the
log2 bounds of the two first neglected terms; evaluation needs the formulas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from . import _coefficients as C
from . import _polynomials as P

FAMILIES = ("exp", "phi1")
METHODS = ("opt15", "ps", "baseline")


@dataclasses.dataclass(frozen=True, eq=False)
class Scheme:
    """Orders and formulas of one (method, family) pair.

    Attributes:
      method: "opt15" or "ps".
      family: "exp" or "phi1".
      orders: the Taylor orders m, cheapest first (15 stands for 15+).
      products: matrix products of each order's evaluation, A2 included.
      first: the order-1 formula, which needs no A2.
      formulas: the formulas of orders[1:], called as f(A, A2).
      log2_b: per order, log2 of the coefficients bounding the two first neglected
        terms, b_{m+1} and b_{m+2} (b_16 of 15+ is its degree-16 coefficient error).
    """

    method: str
    family: str
    orders: tuple[int, ...]
    products: tuple[int, ...]
    first: Callable[[jax.Array], jax.Array]
    formulas: tuple[P.Formula, ...]
    log2_b: tuple[tuple[float, float], ...]

    @property
    def shift(self) -> int:
        """Taylor coefficients are 1/(k + shift)!."""
        return FAMILIES.index(self.family)


def _log2_b(orders: tuple[int, ...], shift: int, b16: float | None) -> tuple:
    out = []
    for m in orders:
        b = [C.log2_inverse_factorial(p + shift) for p in (m + 1, m + 2)]
        if m == 15 and b16 is not None:
            b[0] = b16
        out.append(tuple(b))
    return tuple(out)


def _opt15(family: str) -> Scheme:
    shift = FAMILIES.index(family)
    tay = P.taylor(2, shift)
    c4, c8, c15, b16 = {
        "exp": (C.EXP_4, C.EXP_8, C.EXP_15, C.LOG2_B16_EXP),
        "phi1": (C.PHI1_4, C.PHI1_8, C.PHI1_15, C.LOG2_B16_PHI1),
    }[family]
    orders = (1, 2, 4, 8, 15)
    return Scheme(
        method="opt15",
        family=family,
        orders=orders,
        products=(0, 1, 2, 3, 4),
        first=P.linear(tay[0], tay[1]),
        formulas=(P.quadratic(tay), P.sastre4(c4), P.sastre8(c8), P.sastre15(c15)),
        log2_b=_log2_b(orders, shift, b16),
    )


def _ps(family: str) -> Scheme:
    shift = FAMILIES.index(family)
    orders = (1, 2, 4, 6, 9, 12, 16)
    tay = P.taylor(1, shift)
    return Scheme(
        method="ps",
        family=family,
        orders=orders,
        products=(0, 1, 2, 3, 4, 5, 6),
        first=P.linear(tay[0], tay[1]),
        formulas=tuple(P.paterson_stockmeyer(P.taylor(m, shift)) for m in orders[1:]),
        log2_b=_log2_b(orders, shift, None),
    )


SCHEMES: dict[tuple[str, str], Scheme] = {
    (method, family): make(family)
    for method, make in (("opt15", _opt15), ("ps", _ps))
    for family in FAMILIES
}
