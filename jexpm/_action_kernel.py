"""The action e^X B of small matrices on GPUs in fused kernels, with no host round trips.

On XLA:GPU the action of _action.py pays a host round trip for the ``cond`` that
decides whether the norms of powers are computed, and one per iteration of its step
loop and of every Taylor sum (their trip counts depend on the data; _kernel.py's
docstring has the runtime's reasons). For real (float32, float64) batches with
n <= ``Tuning.kernel_max_n`` and at most side(n) columns this module runs the steps
in Pallas kernels (the Triton backend), each lane of a program one member
(_kernel.py's tiles and launch, _tile.py's arithmetic):

  1. the path is chosen outside the kernels by ``_action.select`` itself, with
     ``branch_free``: the norms of X0^2, X0^4 and X0^8 are computed whether or not
     they are used, and the selection reads them exactly where its ``cond`` would
     have computed them, so the order, the steps and the products counted are the
     XLA path's ([AH11], section 3 and Code Fragment 3.1);
  2. ``_value_kernel``: per lane the shift, then the s steps, each a Taylor sum that
     ends early once two consecutive terms are negligible ([AH11], Algorithm 3.2,
     lines 13-16); the steps loop to the tile's largest s and each sum to the last
     lane's termination, lanes that are done held fixed, as ``_action.evaluate``
     does for the batch; NaN for non-finite members (steps 0);
  3. ``_tangent_kernel``: the tangent primitive's value, the forward-mode derivative
     of that same evaluation inside the kernel (``jax.jvp``), at the path given;
  4. ``_transpose_kernel``: the transpose primitive's value, ``_action.transpose``'s
     backward steps and adjoint recurrences, with nothing stored: each step's input
     F_i is formed again from B and each term again from F_i (the XLA path keeps
     checkpoints and a stack of terms, which a lane has no room for).

Stiff members (order FORMED) leave B as it is here, as in the XLA path; the caller
(_multiply.py) forms expm(X) B for them. Second derivatives differentiate the XLA
path's implementations (the kernels have no JVP rule of their own).

[AH11] A. H. Al-Mohy and N. J. Higham, "Computing the action of the matrix
       exponential, with an application to exponential integrators", SIAM J. Sci.
       Comput. 33(2) (2011) 488-511.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _action as action_alg
from . import _kernel, _products, _tuning
from ._tile import Tile


def covers(x: jax.Array, b: jax.Array, tuning: _tuning.Tuning) -> bool:
    """Whether the kernels compute the action of ``x`` (..., n, n) on ``b`` (..., n, k).

    Static. Real dtypes (Triton has no complex arithmetic), n up to the expm kernels'
    limit and blocks no wider than the matrix's padded side, so a lane holds no more
    than its matrix's entries again per block.
    """
    n, k = x.shape[-1], b.shape[-1]
    return (
        np.dtype(x.dtype) in _kernel.DTYPES
        and np.dtype(b.dtype) == np.dtype(x.dtype)
        and 1 <= n <= tuning.kernel_max_n
        and 1 <= k <= _kernel.side(n)
        and math.prod(x.shape[:-2]) > 0
    )


def _norm_inf(v: jax.Array) -> jax.Array:
    """Per lane infinity norm of the (N, K) blocks; NaN if any entry is (as XLA's max)."""
    rows = jnp.sum(jnp.abs(v), axis=2)
    nan = jnp.max(jnp.where(jnp.isnan(rows), 1, 0), axis=1) > 0
    return jnp.where(nan, jnp.nan, jnp.max(rows, axis=1))


class _Steps:
    """What every step of a tile uses (``_action.step_of``) and one step's Taylor sum."""

    def __init__(self, x: Tile, order: jax.Array, steps: jax.Array, tol: float, dtype):
        mu = x.trace() / x.n
        self.x0 = x.plus_identity(-mu)
        mu = jnp.where(order == action_alg.FORMED, 0, mu)  # formed lanes: F = B
        self.s = jnp.maximum(steps, 1).astype(mu.dtype)
        self.eta = jnp.exp(mu / self.s)
        self.order, self.steps, self.tol, self.dtype = order, steps, tol, dtype

    def coefficient(self, j: jax.Array) -> jax.Array:
        """1 / (s j) per lane, as ``_action._coefficient``."""
        return (1 / (self.s * j.astype(self.s.dtype))).astype(self.dtype)[:, None, None]

    def taylor_sum(self, active: jax.Array, f: jax.Array):
        """(sum_(j <= q) (X0 / s)^j F / j!, q) per lane, q = 0 where not ``active``."""

        def body(carry):
            j, term, total, c1, going, q = carry
            j = j + 1
            new = self.x0.apply(term) * self.coefficient(j)
            mask = going[:, None, None]
            total = jnp.where(mask, total + new, total)
            term = jnp.where(mask, new, term)
            q = jnp.where(going, j, q)
            c2 = _norm_inf(new)
            done = (c1 + c2 <= self.tol * _norm_inf(total)) | (j >= self.order)
            return j, term, total, c2, going & ~done, q

        going = active & (self.order > 0)
        init = (jnp.int32(0), f, f, _norm_inf(f), going, jnp.zeros_like(self.order))
        _, _, total, _, _, q = lax.while_loop(lambda c: _kernel.any_lane(c[4]), body, init)
        return total, q

    def step(self, i, f: jax.Array):
        """Step i of every lane, F <- eta sum: (F_new, q); lanes past their s keep F."""
        active = i < self.steps
        total, q = self.taylor_sum(active, f)
        return jnp.where(active[:, None, None], self.eta[:, None, None] * total, f), q


def _evaluate(x: Tile, b: jax.Array, order: jax.Array, steps: jax.Array, tol: float):
    """``_action.evaluate`` on a tile: (F, block products per lane), NaN where steps = 0."""
    run = _Steps(x, order, steps, tol, b.dtype)

    def step(i, carry):
        f, count = carry
        f, q = run.step(i, f)
        return f, count + q

    f, count = lax.fori_loop(0, jnp.max(steps), step, (b, jnp.zeros_like(steps)))
    return jnp.where((steps > 0)[:, None, None], f, jnp.nan), count


def _outer(u: jax.Array, v: jax.Array) -> jax.Array:
    """Per lane u v^T for (N, K) blocks: the (N, N) sum of K outer products."""
    columns = lax.broadcasted_iota(jnp.int32, u.shape, 2)

    def update(c, out):
        left = jnp.sum(jnp.where(columns == c, u, 0), axis=2, keepdims=True)  # [l, i, 0]
        right = jnp.sum(jnp.where(columns == c, v, 0), axis=2)[:, None, :]  # [l, 0, j]
        return out + left * right

    shape = (u.shape[0], u.shape[1], u.shape[1])
    return lax.fori_loop(0, u.shape[2], update, jnp.zeros(shape, u.dtype))


def _transpose(x: Tile, b: jax.Array, g: jax.Array, order, steps, tol: float):
    """``_action.transpose`` on a tile: (gX, gB), the steps run backwards.

    Nothing is stored per step or per term: F_i is formed again from B for each step
    i, and each term B_(j-1) again from F_i for each j, so a lane holds a few blocks
    whatever s and m, at the price of about s^2 / 2 steps and q^2 / 2 products per
    step (little for the small s and q of small norms).
    """
    run = _Steps(x, order, steps, tol, b.dtype)
    x0_t = run.x0.T
    last = jnp.max(steps)
    g = jnp.where((steps > 0)[:, None, None], g, 0)

    def back(r, carry):
        g, g_x0, g_eta = carry
        i = last - 1 - r
        f = lax.fori_loop(0, i, lambda h, f: run.step(h, f)[0], b)
        active = i < steps
        total, q = run.taylor_sum(active, f)
        g_eta = g_eta + jnp.where(active, jnp.sum(jnp.sum(g * total, axis=2), axis=1), 0)
        g_total = jnp.where(active[:, None, None], run.eta[:, None, None] * g, 0)
        top = jnp.max(q)

        def term(jj, inner):
            carried, g_x0 = inner
            j = top - jj
            on = (j <= q)[:, None, None]
            g_term = jnp.where(on, g_total + carried, 0)
            c = run.coefficient(j)
            previous = lax.fori_loop(1, j, lambda h, t: run.x0.apply(t) * run.coefficient(h), f)
            g_x0 = g_x0 + _outer(g_term, jnp.where(on, previous, 0)) * c
            return jnp.where(on, x0_t.apply(g_term) * c, carried), g_x0

        carried, g_x0 = lax.fori_loop(0, top, term, (jnp.zeros_like(g), g_x0))
        g = jnp.where(active[:, None, None], g_total + carried, g)
        return g, g_x0, g_eta

    init = (g, jnp.zeros_like(x.x), jnp.zeros(steps.shape, b.dtype))
    g_b, g_x0, g_eta = lax.fori_loop(0, last, back, init)
    # X0 = X - mu I, eta = e^(mu / s), mu = tr(X) / n.
    g_x0 = Tile(g_x0, x.n)
    g_mu = g_eta * run.eta / run.s.astype(b.dtype) - g_x0.trace()
    g_x = g_x0.plus_identity(g_mu / x.n).x
    ok = (steps > 0)[:, None, None]
    return jnp.where(ok, g_x, jnp.nan), jnp.where(ok, g_b, jnp.nan)


def _value_kernel(tol: float, n: int, x_ref, b_ref, path_ref, f_ref, count_ref):
    """F and the products per lane; ``path_ref`` rows: order, steps."""
    order, steps = path_ref[0, :], path_ref[1, :]
    f, count = _evaluate(Tile(x_ref[...], n), b_ref[...], order, steps, tol)
    f_ref[...] = f.astype(f_ref.dtype)
    count_ref[0, :] = count


def _tangent_kernel(tol: float, n: int, x_ref, b_ref, dx_ref, db_ref, path_ref, out_ref):
    """The derivative of the evaluation at the path, in the direction (dX, dB)."""
    order, steps = path_ref[0, :], path_ref[1, :]

    def value(x, b):
        return _evaluate(Tile(x, n), b, order, steps, tol)[0]

    _, df = jax.jvp(value, (x_ref[...], b_ref[...]), (dx_ref[...], db_ref[...]))
    out_ref[...] = df.astype(out_ref.dtype)


def _transpose_kernel(tol: float, n: int, x_ref, b_ref, g_ref, path_ref, g_x_ref, g_b_ref):
    """(gX, gB): the transpose of the tangent at the path, applied to G."""
    order, steps = path_ref[0, :], path_ref[1, :]
    g_x, g_b = _transpose(Tile(x_ref[...], n), b_ref[...], g_ref[...], order, steps, tol)
    g_x_ref[...] = g_x.astype(g_x_ref.dtype)
    g_b_ref[...] = g_b.astype(g_b_ref.dtype)


def _rows(order: jax.Array, steps: jax.Array) -> jax.Array:
    return jnp.stack([order.astype(jnp.int32).ravel(), steps.astype(jnp.int32).ravel()])


def compute(tol: float, x: jax.Array, b: jax.Array, interpret: bool = False):
    """(F, path, block products, n x n products) as ``_multiply._compute``, in a kernel."""
    batch, n = x.shape[:-2], x.shape[-1]
    count = math.prod(batch)
    x0, _ = action_alg.shift(x)
    path, spent = action_alg.select(x0, b.shape[-1], tol, _products.matmul, branch_free=True)
    b_blocks = _kernel.blocks(b)
    f, products = _kernel.launch(
        functools.partial(_value_kernel, tol, n),
        n,
        count,
        [(_kernel.blocks(x), "matrix"), (b_blocks, "matrix"), (_rows(*path), "rows")],
        [
            (jax.ShapeDtypeStruct(b_blocks.shape, b.dtype), "matrix"),
            (jax.ShapeDtypeStruct((1, count), jnp.int32), "rows"),
        ],
        interpret,
    )
    products = products[0].reshape(batch)
    return _kernel.unblock(f, b.shape), path, products, jnp.broadcast_to(spent, batch)


def tangent(tol: float, x, b, dx, db, order, steps, interpret: bool = False) -> jax.Array:
    """The tangent primitive's value, dF at the path (order, steps), in a kernel."""
    n, count = x.shape[-1], math.prod(x.shape[:-2])
    b_blocks = _kernel.blocks(b)
    (out,) = _kernel.launch(
        functools.partial(_tangent_kernel, tol, n),
        n,
        count,
        [
            (_kernel.blocks(x), "matrix"),
            (b_blocks, "matrix"),
            (_kernel.blocks(dx), "matrix"),
            (_kernel.blocks(db), "matrix"),
            (_rows(order, steps), "rows"),
        ],
        [(jax.ShapeDtypeStruct(b_blocks.shape, db.dtype), "matrix")],
        interpret,
    )
    return _kernel.unblock(out, db.shape)


def transpose(tol: float, x, b, g, order, steps, interpret: bool = False):
    """The transpose primitive's value, [gX, gB] at the path (order, steps), in a kernel."""
    n, count = x.shape[-1], math.prod(x.shape[:-2])
    x_blocks, b_blocks = _kernel.blocks(x), _kernel.blocks(b)
    g_x, g_b = _kernel.launch(
        functools.partial(_transpose_kernel, tol, n),
        n,
        count,
        [
            (x_blocks, "matrix"),
            (b_blocks, "matrix"),
            (_kernel.blocks(g), "matrix"),
            (_rows(order, steps), "rows"),
        ],
        [
            (jax.ShapeDtypeStruct(x_blocks.shape, x.dtype), "matrix"),
            (jax.ShapeDtypeStruct(b_blocks.shape, b.dtype), "matrix"),
        ],
        interpret,
    )
    return [_kernel.unblock(g_x, x.shape), _kernel.unblock(g_b, b.shape)]
