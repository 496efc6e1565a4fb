"""A tile of small matrices inside the GPU kernel: the kernel's matrix type.

Inside the kernels of _kernel.py a batch tile is one (lanes, N, N) array, N the
matrices' n rounded up to a power of two (Triton's blocks have power-of-two sides) and
the padding zero. :class:`Tile` gives it the arithmetic the evaluation formulas of
_polynomials.py use (sums, scalar multiples, ``@``, ``plus_identity``), so the kernels
evaluate the very formulas of the XLA path, written only with what Triton lowers:
elementwise operations, ``iota`` masks, sums and maxima along an axis, and
broadcasts. A product is n rank-one updates, each column and row picked out by a
masked sum, in a loop: a program's size does not grow with n. Padding stays zero under every
operation here (the identity and the band are set on the n x n block only). It is a
pytree, so ``lax.fori_loop``, ``lax.cond`` and ``jax.jvp`` take it as they take arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import _algorithm as alg


def _iota(shape, axis: int) -> jax.Array:
    return lax.broadcasted_iota(jnp.int32, shape, axis)


@jax.tree_util.register_pytree_node_class
class Tile:
    """``x[l]`` is lane l's n x n matrix, in the top-left corner of an N x N block."""

    def __init__(self, x: jax.Array, n: int):
        self.x = x
        self.n = n

    def tree_flatten(self):
        return (self.x,), self.n

    @classmethod
    def tree_unflatten(cls, n: int, children) -> Tile:
        return cls(children[0], n)

    def _new(self, x: jax.Array) -> Tile:
        return Tile(x, self.n)

    @property
    def _rows(self) -> jax.Array:
        return _iota(self.x.shape, 1)

    @property
    def _columns(self) -> jax.Array:
        return _iota(self.x.shape, 2)

    def _eye(self, offset: int = 0) -> jax.Array:
        """The (super)diagonal of the n x n block."""
        return (self._columns == self._rows + offset) & (self._columns < self.n)

    def __add__(self, other: Tile) -> Tile:
        return self._new(self.x + other.x)

    def __sub__(self, other: Tile) -> Tile:
        return self._new(self.x - other.x)

    def __mul__(self, c) -> Tile:
        """By a scalar."""
        return self._new(self.x * c)

    __rmul__ = __mul__

    def __matmul__(self, other: Tile) -> Tile:
        columns, rows = self._columns, self._rows

        def update(k, out):
            column = jnp.sum(jnp.where(columns == k, self.x, 0), axis=2, keepdims=True)
            row = jnp.sum(jnp.where(rows == k, other.x, 0), axis=1, keepdims=True)
            return out + column * row

        return self._new(lax.fori_loop(0, self.n, update, jnp.zeros_like(self.x)))

    @property
    def T(self) -> Tile:
        return self._new(jnp.swapaxes(self.x, 1, 2))

    def apply(self, v: jax.Array) -> jax.Array:
        """Each lane's matrix times its (N, K) block ``v[l]``: n rank-one updates, like ``@``.

        The padding rows are set to zero at the end: a zero row of the matrix times an
        infinite entry of ``v`` would leave NaN there.
        """
        columns, rows = self._columns, _iota(v.shape, 1)

        def update(k, out):
            column = jnp.sum(jnp.where(columns == k, self.x, 0), axis=2, keepdims=True)
            row = jnp.sum(jnp.where(rows == k, v, 0), axis=1, keepdims=True)
            return out + column * row

        out = lax.fori_loop(0, self.n, update, jnp.zeros(v.shape, jnp.result_type(self.x, v)))
        return jnp.where(rows < self.n, out, 0)

    def plus_identity(self, c) -> Tile:
        """This + c I; ``c`` a scalar or one per lane."""
        c = jnp.asarray(c)
        c = c[:, None, None] if c.ndim else c
        return self._new(jnp.where(self._eye(), self.x + c, self.x))

    def trace(self) -> jax.Array:
        """Per lane: the sum of the diagonal."""
        return jnp.sum(jnp.sum(jnp.where(self._eye(), self.x, 0), axis=2), axis=1)

    def identity_like(self) -> Tile:
        return self._new(jnp.where(self._eye(), 1, 0).astype(self.x.dtype))

    def norm1(self) -> jax.Array:
        """Per lane 1-norm (largest absolute column sum); NaN if any entry is.

        NaN is set explicitly: a maximum need not propagate it on the GPU.
        """
        norm = jnp.max(jnp.sum(jnp.abs(self.x), axis=1), axis=1)
        nan = jnp.max(jnp.max(jnp.where(jnp.isnan(self.x), 1, 0), axis=2), axis=1) > 0
        return jnp.where(nan, jnp.nan, norm)

    def scale(self, s: jax.Array) -> Tile:
        """Each lane's matrix times 2**-s exactly (``alg.scale``)."""
        return self._new(alg.scale(self.x, s))

    def where(self, lanes: jax.Array, other: Tile) -> Tile:
        """This tile in the lanes where ``lanes`` is set, ``other`` elsewhere."""
        return self._new(jnp.where(lanes[:, None, None], self.x, other.x))

    def upper(self) -> Tile:
        """The upper triangle (diagonal included)."""
        return self._new(jnp.where(self._columns >= self._rows, self.x, 0))

    def is_upper(self) -> jax.Array:
        """Per lane: whether every entry below the diagonal is zero."""
        below = jnp.where((self._columns < self._rows) & (self.x != 0), 1, 0)
        return jnp.max(jnp.max(below, axis=2), axis=1) == 0

    def band_values(self, k: jax.Array) -> Tile:
        """The band of exp(2^-k A) for upper triangular A (``alg.triangular_values``).

        Diagonal exp(2^-k a_ii); superdiagonal 2^-k a_{i,i+1} times the divided
        difference of exp at 2^-k a_ii and 2^-k a_{i+1,i+1}. Only the band is read;
        the result is zero off the band.
        """
        eye, sup = self._eye(), self._eye(1)
        scaled = alg.scale(self.x, k)
        diagonal = jnp.sum(jnp.where(eye, scaled, 0), axis=1, keepdims=True)  # [l, 0, j]
        here = jnp.sum(jnp.where(eye, scaled, 0), axis=2, keepdims=True)  # [l, i, 0]
        after = jnp.sum(jnp.where(sup, diagonal, 0), axis=2, keepdims=True)  # a_(i+1,i+1)
        band = jnp.where(eye, jnp.exp(here), 0)
        upper = scaled * alg.exp_divided_difference(here, after)
        return self._new(jnp.where(sup, upper, band))

    def band(self) -> Tile:
        """The diagonal and superdiagonal; zero elsewhere."""
        return self._new(jnp.where(self._eye() | self._eye(1), self.x, 0))

    def off_band(self) -> Tile:
        """Zero on the diagonal and superdiagonal."""
        return self._new(jnp.where(self._eye() | self._eye(1), 0, self.x))

    def with_band(self, band: Tile) -> Tile:
        """This tile with its diagonal and superdiagonal taken from ``band``."""
        return self._new(jnp.where(self._eye() | self._eye(1), band.x, self.x))
