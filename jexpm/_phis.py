r"""φ_0(A), ..., φ_k(A) by scaling and modified squaring: an approximant of its own.

:math:`\varphi_j(z) = \sum_{i \ge 0} z^i / (i + j)!`. The method of B. Skaflestad and
W. M. Wright, "The scaling and modified squaring method for matrix functions related
to the exponential", Appl. Numer. Math. 59 (2009) 783-799, with truncated Taylor
series for the scaled functions (the paper uses Padé approximants):

1. **Scale.** X = 2^-s A, s per member (below).
2. **Taylor.** :math:`\tau_k(X) = \sum_{i \le m} X^i / (i + k)!` by Paterson–Stockmeyer
   (powers X^2..X^(p-1) stored, Horner in X^p), then
   :math:`\tau_j = X \tau_{j+1} + I / j!` for j = k-1..0, which is exactly the series
   of :math:`\varphi_j` to degree d - j, d = m + k.
3. **Modified squaring**, s times:
   :math:`\varphi_j(2X) = 2^{-j}[\varphi_0(X)\varphi_j(X) + \sum_{i=1}^{j}
   \varphi_i(X)/(j-i)!]`, k + 1 products of size n per step.

**Why it is a polynomial of an exponential's block matrix.** With
:math:`W = [[A, I, 0, \dots], [0, 0, I, \dots], \dots, [0, \dots, 0]]` ((k+1)n square),
the first block row of :math:`T_d(W/2^s)`, :math:`T_d(z) = \sum_{i \le d} z^i/i!`, is
:math:`[2^{-sj}\tau_j(X)]_j`, its lower blocks are those of :math:`e^{N/2^s}` (N the
nilpotent shift, exact since d >= k), and step 3 is block j of the first row of the
square (up to the diagonal similarity that removes the powers of two). So the
computed :math:`p_j(A)` is block (0, j) of :math:`R(W)`,
:math:`R(z) = T_d(z/2^s)^{2^s}`, a polynomial with real coefficients. Hence

* **forward mode** differentiates the steps above (``jax.jvp``): 3(k+1) products
  per squaring;
* **reverse mode**: under JAX's pairing the transpose of
  :math:`E \mapsto [L_{p_j}(A, E)]_j` at :math:`[G_j]_j` is
  :math:`S^T` with :math:`S = [L_R(W, F)]_{00}` and F holding :math:`G_j^T` in block
  (j, 0) (the polynomial identity :math:`L_R^*(W, G) = L_R(W^T, G)`). Only the first
  block column of :math:`dZ = L(\cdot)` is needed through the squarings
  :math:`Z \leftarrow Z^2`, :math:`dZ \leftarrow dZ\,Z + Z\,dZ`: with
  :math:`D_l = dZ_{l0}` and :math:`Z_{0m} = t^m \varphi_m`, :math:`Z_{lm} =
  t^{m-l}/(m-l)!\,I` (t = 2^(i-s) at step i),

  .. math:: D_0 \leftarrow D_0\varphi_0 + \sum_m t^m \varphi_m D_m, \qquad
            D_l \leftarrow D_l\varphi_0 + \sum_{m \ge l} \frac{t^{m-l}}{(m-l)!} D_m,

  again 3(k+1) products per squaring, run forward: reverse mode stores no squaring.
  The start, the first block column of :math:`L_{T_d}(W/2^s, F/2^s)`, is
  :math:`D_0 = \sum_m 2^{-s(m+1)} L_{\tau_m}(X, E_m)` and
  :math:`D_l = \sum_{a=0}^{k-l} 2^{-s(a+1)} E_{l+a}\tau_{a+1}(X)` (E_j = G_j^T).

**Choice of s** (per member, on device). The degree m and a radius θ are fixed per
(k, dtype, tol) by :func:`plan`: with :math:`\ell_j(\theta) = \min_{|z| \le \theta}
|\varphi_j(z)|` (a lower bound of :math:`\|\varphi_j(X)\|` whenever the spectral
radius of X is at most θ, as every eigenvalue of :math:`\varphi_j(X)` is
:math:`\varphi_j(\lambda)`), m is the least degree whose neglected terms satisfy
:math:`\sum_{i > m + k - j} \theta^i/(i + j)! \le tol\, \ell_j(\theta)` for every
j <= k, and θ = 2^t (t = -5..1) minimises evaluation products less (k + 1) t (one
squaring more per halving). Per member, s_0 = ceil(log2(||A||_1 / θ)); then, as
A. H. Al-Mohy and N. J. Higham, SIAM J. Matrix Anal. Appl. 31(3) (2009), Theorem
4.2, bound the tail by :math:`\alpha = \max(\|X^{p-1}\|^{1/(p-1)},
\|X^p\|^{1/p})` (every neglected power has degree at least (p-1)(p-2)), and s drops
by floor(log2(θ / α)) (at most to 0, and so that X^p cannot overflow), reusing the
powers (rescaling by powers of two is exact). Without that refinement, strongly
non-normal matrices take many more squarings than they need, and each loses accuracy:
on A = diag(-1, -2, -3, -4) + 2^40 e_1 e_2^T (float64, φ_0) a cap of 8 left 34
squarings and a relative error of 1e-8 against mpmath.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _algorithm as alg
from . import _tuning
from ._approximants import Approximant, Path

#: θ = 2**t for t in this range (see the module docstring).
_THETA_EXPONENTS = range(-5, 2)


class Plan(NamedTuple):
    """The static choices for one (k, dtype, tol): see the module docstring."""

    theta: float
    degree: int  # m, the degree of τ_k; τ_j has degree m + k - j
    p: int  # Paterson–Stockmeyer block: X^2..X^(p-1) stored, Horner in X^p
    products: int  # evaluation products: powers, Horner, then k for the recurrence


def _lower_bounds(theta: float, k: int) -> list[float]:
    """ℓ_j(θ) = min over the closed disc |z| <= θ of |φ_j(z)|, j = 0..k, on a fine grid."""
    radii = np.linspace(0.0, theta, 65)[:, None]
    z = (radii * np.exp(2j * np.pi * np.arange(512) / 512)).ravel()
    out = []
    for j in range(k + 1):
        term, total = np.full_like(z, 1 / math.factorial(j)), np.zeros_like(z)
        for i in range(1, 120):
            total += term
            term = term * z / (i + j)
        out.append(float(np.abs(total).min()))
    return out


def _tail(theta: float, degree: int, j: int) -> float:
    """Σ_{i > degree} θ^i / (i + j)!, the neglected part of φ_j's series at radius θ."""
    return math.fsum(theta**i / math.factorial(i + j) for i in range(degree + 1, degree + 120))


def _ps_split(m: int) -> tuple[int, int]:
    """(p, products) of Paterson–Stockmeyer for degree m: X^2..X^p, Horner in X^p.

    p = 1 (m <= 1) is the plain sum. Ties go to the smaller p.
    """
    if m <= 1:
        return 1, 0
    return min(((p, p - 1 + m // p) for p in range(2, m + 1)), key=lambda c: (c[1], c[0]))


@functools.cache
def plan(k: int, dtype: str, tol: float) -> Plan:
    """θ, the degree and the evaluation of φ_0..φ_k for ``tol`` (module docstring)."""
    best: tuple[float, Plan] | None = None
    for t in _THETA_EXPONENTS:
        theta = 2.0**t
        lower = _lower_bounds(theta, k)
        if min(lower) <= 0:
            continue
        m = next(
            m
            for m in range(200)
            if all(_tail(theta, m + k - j, j) <= tol * lower[j] for j in range(k + 1))
        )
        p, ps = _ps_split(m)
        candidate = Plan(theta, m, p, ps + k)
        cost = candidate.products - (k + 1) * t
        if best is None or cost < best[0]:
            best = (cost, candidate)
    assert best is not None, dtype
    return best[1]


def _exponent(plan_: Plan) -> int:
    """The exponent t of θ = 2^t."""
    return round(math.log2(plan_.theta))


def _keep(here: jax.Array, new: jax.Array, old: jax.Array, core_ndim: int = 3) -> jax.Array:
    """``new`` for the members where ``here``, ``old`` elsewhere."""
    return jnp.where(here.reshape(here.shape + (1,) * core_ndim), new, old)


def _mixed(phis: jax.Array, j: int) -> jax.Array | float:
    """Σ_{i=1..j} φ_i / (j - i)!, the identity blocks' share of φ_j(2X) (0 for j = 0)."""
    return sum((phis[..., i, :, :] / math.factorial(j - i) for i in range(1, j + 1)), 0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ModifiedSquaring(Approximant):
    """φ_0(A)..φ_k(A), stacked on axis -3, by scaling and modified squaring.

    Its path index is the degree d = m + k of φ_0's series (the same for every member);
    its results have shape (..., k + 1, n, n), and the derivative rules of
    _derivatives.py apply to it as to the exponential's approximants. It carries its
    ``tol``: ``evaluate`` and ``transpose`` rebuild the plan ``compute`` used.
    """

    k: int
    tol: float
    family: str = "phi"
    method: str = "squaring"
    product_form: str | None = None
    tuning: _tuning.Tuning | None = None

    def result_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:-2], self.k + 1, *shape[-2:])

    def order(self, index: jax.Array) -> jax.Array:
        """The degree of φ_0's truncated series."""
        return index

    def _plan(self, a: jax.Array) -> Plan:
        return plan(self.k, np.dtype(alg.real_dtype(a)).name, self.tol)

    def _powers(self, x: jax.Array, p: int) -> list[jax.Array]:
        """[X, X^2, ..., X^p] (just [X] for p = 1)."""
        powers = [x]
        for _ in range(2, p + 1):
            powers.append(self.matmul(powers[-1], x))
        return powers

    def _taylor(self, powers: list[jax.Array], plan_: Plan) -> jax.Array:
        """[τ_0(X), ..., τ_k(X)] stacked on axis -3, from [X, ..., X^p]."""
        k, m, p = self.k, plan_.degree, plan_.p
        x = powers[0]
        eye = alg.identity_like(x)
        coeffs = [1 / math.factorial(i + k) for i in range(m + 1)]
        basis = [eye, *powers[: p - 1]] if p > 1 else [eye, x]

        def block(cs) -> jax.Array:
            return sum((c * basis[r] for r, c in enumerate(cs)), jnp.zeros_like(x))

        width = p if p > 1 else len(coeffs)
        blocks = [coeffs[i : i + width] for i in range(0, len(coeffs), width)]
        tau = block(blocks[-1])
        for cs in reversed(blocks[:-1]):
            tau = self.matmul(tau, powers[p - 1]) + block(cs)
        taus = [tau]  # τ_k, then τ_(k-1), ..., τ_0
        for j in range(k - 1, -1, -1):
            taus.append(self.matmul(x, taus[-1]) + eye / math.factorial(j))
        return jnp.stack(taus[::-1], axis=-3)

    def _step(self, phis: jax.Array) -> jax.Array:
        """One modified squaring: [φ_j(X)]_j to [φ_j(2X)]_j (k + 1 products)."""
        head = jnp.broadcast_to(phis[..., :1, :, :], phis.shape)
        products = self.matmul(head, phis)
        new = [(products[..., j, :, :] + _mixed(phis, j)) * (0.5**j) for j in range(self.k + 1)]
        return jnp.stack(new, axis=-3)

    def _square(self, phis: jax.Array, s: jax.Array) -> jax.Array:
        """Squarings per member (s of them), one loop to the batch's largest s."""

        def body(i, phis):
            return _keep(i < s, self._step(phis), phis)

        return lax.fori_loop(0, jnp.max(s, initial=0), body, phis)

    def compute(self, a: jax.Array, tol: float):
        """(result, path, products): s per member from norms (module docstring).

        ``tol`` is the approximant's own (the derivative rules pass it along).
        """
        assert tol == self.tol, (tol, self.tol)
        plan_ = self._plan(a)
        a1 = alg.norm1(a)
        finite = alg.finite_member(a1)
        s0 = jnp.ceil(jnp.log2(a1 / plan_.theta))
        s0 = jnp.clip(jnp.where(finite, s0, 0), 0, alg.max_squarings(a1.dtype)).astype(jnp.int32)
        powers = self._powers(alg.scale(a, s0), plan_.p)
        s = s0
        if plan_.p >= 3 and (plan_.p - 1) * (plan_.p - 2) <= plan_.degree + 1:
            q = plan_.p - 1
            alpha = jnp.maximum(
                alg.norm1(powers[q - 1]) ** (1 / q), alg.norm1(powers[q]) ** (1 / plan_.p)
            )
            # At most down to s = 0, and so that X^p stays below 2^(maxexp - 8).
            most = (int(jnp.finfo(a1.dtype).maxexp) - 8) // plan_.p - max(0, _exponent(plan_))
            drop = jnp.floor(jnp.log2(plan_.theta / alpha))
            drop = jnp.where(jnp.isfinite(drop), drop, most)
            drop = jnp.minimum(jnp.clip(drop, 0, most).astype(jnp.int32), s0)
            s = s0 - drop
            powers = [alg.scale(x, -(i + 1) * drop) for i, x in enumerate(powers)]
        result = self._square(self._taylor(powers, plan_), s)
        index = jnp.full(s.shape, plan_.degree + self.k, jnp.int32)
        path = Path(index, s, jnp.zeros(s.shape, bool))
        products = plan_.products + (self.k + 1) * s
        return alg.mask_nonfinite(result, finite), path, products

    def evaluate(self, a: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """The function ``compute`` computed, for given squarings: a polynomial in A."""
        del depth
        plan_ = self._plan(a)
        powers = self._powers(alg.scale(a, path.squarings), plan_.p)
        return self._square(self._taylor(powers, plan_), path.squarings)

    def transpose(self, a: jax.Array, g: jax.Array, path: Path, depth: int = 0) -> jax.Array:
        """Σ_j L_{p_j}(A, .)^T (G_j), forward through the squarings (module docstring)."""
        del depth
        k = self.k
        plan_ = self._plan(a)
        s = path.squarings
        x = alg.scale(a, s)
        taylor = functools.partial(self._taylor, plan_=plan_)

        def tau(x):
            return taylor(self._powers(x, plan_.p))

        phis = tau(x)
        e = jnp.swapaxes(g, -1, -2)  # E_j = G_j^T
        # D_0 = Σ_m 2^(-s(m+1)) L_{τ_m}(X, E_m): one tangent of the Taylor step per m.
        d0 = sum(
            alg.scale(jax.jvp(tau, (x,), (e[..., m, :, :],))[1][..., m, :, :], (m + 1) * s)
            for m in range(k + 1)
        )
        # D_r = Σ_{a=0}^{k-r} 2^(-s(a+1)) E_{r+a} τ_{a+1}(X), r >= 1.
        ds = [d0] + [
            sum(
                alg.scale(self.matmul(e[..., r + a, :, :], phis[..., a + 1, :, :]), (a + 1) * s)
                for a in range(k - r + 1)
            )
            for r in range(1, k + 1)
        ]

        def body(i, carry):
            phis, ds = carry
            head = phis[..., 0, :, :]
            behind = s - i  # t = 2^(i - s) = 2^-behind
            stack = jnp.stack(ds, axis=-3)
            right = self.matmul(stack, jnp.broadcast_to(head[..., None, :, :], stack.shape))
            left = self.matmul(phis, stack)  # φ_m D_m
            new_ds = [
                right[..., 0, :, :]
                + sum(alg.scale(left[..., m, :, :], m * behind) for m in range(k + 1))
            ]
            for r in range(1, k + 1):
                new_ds.append(
                    right[..., r, :, :]
                    + sum(
                        alg.scale(ds[m], (m - r) * behind) / math.factorial(m - r)
                        for m in range(r, k + 1)
                    )
                )
            here = i < s
            new_phis = _keep(here, self._step(phis), phis)
            return new_phis, [_keep(here, n, o, 2) for n, o in zip(new_ds, ds, strict=True)]

        _, ds = lax.fori_loop(0, jnp.max(s, initial=0), body, (phis, ds))
        return jnp.swapaxes(ds[0], -1, -2)
