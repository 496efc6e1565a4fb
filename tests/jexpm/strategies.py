"""Hypothesis strategies and oracles for the property-based tests (``test_properties_*.py``).

A drawn batch stacks members that each have their own structure, 1-norm and seed, so that
one compiled program (jexpm specialises on shape and dtype, not on values) meets many kinds
of matrix: the search varies the values freely and the shapes within small pools, which
keeps compilation, the dominant cost of a JAX test, bounded.

Structures (``STRUCTURES``): dense Gaussian; upper triangular; diagonal; nilpotent (a
strictly upper triangular matrix under a random permutation similarity); skew-symmetric
(skew-Hermitian for complex dtypes); normal (a random orthogonal or unitary similarity of
a block diagonal with 1x1 and rotation-scaled 2x2 blocks); strongly non-normal (upper
triangular with off-diagonal entries 10x the diagonal's); block diagonal (two dense
blocks). A complex dtype draws complex entries.

Members are made in float64/complex128 with NumPy from a drawn seed, scaled to the drawn
1-norm, then rounded to the drawn dtype; ``Batch.exact`` is the rounded input in
float64/complex128, the argument every oracle is evaluated at.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.linalg
from hypothesis import strategies as st

from tests.helpers import mp_expm

STRUCTURES = (
    "dense",
    "upper_triangular",
    "diagonal",
    "nilpotent",
    "skew",
    "normal",
    "nonnormal",
    "block_diagonal",
)
FLOAT_DTYPES = ("float32", "float64")
COMPLEX_DTYPES = ("complex64", "complex128")
DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES
#: Matrix sides drawn from 1 to 16, in a pool small enough that programs are reused.
SIZES = (1, 2, 3, 5, 8, 16)
#: Batch shapes: none, empty, one member, a few, two batch axes.
BATCHES = ((), (0,), (1,), (3,), (2, 2))


def unit_roundoff(dtype) -> float:
    """u of a float or complex dtype (half its machine epsilon)."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2


def _norm1(a: np.ndarray) -> float:
    return float(np.abs(a).sum(axis=0).max()) if a.size else 0.0


def _orthogonal(rng: np.random.Generator, n: int, complex_: bool) -> np.ndarray:
    z = rng.standard_normal((n, n))
    if complex_:
        z = z + 1j * rng.standard_normal((n, n))
    q, r = np.linalg.qr(z)
    d = np.diagonal(r)
    return q * (d / np.where(np.abs(d) > 0, np.abs(d), 1))


def make_member(
    structure: str, n: int, norm: float, seed: int, complex_: bool, negative: bool = False
) -> np.ndarray:
    """One n x n matrix of the given structure and 1-norm (float64 or complex128).

    ``negative``: shift the spectrum into the closed left half plane (for the normal,
    diagonal and triangular structures), so that the exponential stays bounded whatever
    the norm.
    """
    rng = np.random.default_rng(seed)

    def gaussian(shape):
        z = rng.standard_normal(shape)
        return z + 1j * rng.standard_normal(shape) if complex_ else z

    if structure == "dense":
        a = gaussian((n, n))
    elif structure == "upper_triangular":
        a = np.triu(gaussian((n, n)))
    elif structure == "diagonal":
        a = np.diag(gaussian(n))
    elif structure == "nilpotent":
        p = np.eye(n)[rng.permutation(n)]
        a = p @ np.triu(gaussian((n, n)), 1) @ p.T
    elif structure == "skew":
        g = gaussian((n, n))
        a = g - g.conj().T
    elif structure == "normal":
        q = _orthogonal(rng, n, complex_)
        if complex_:
            d = np.diag(gaussian(n))
        else:
            d = np.diag(rng.standard_normal(n))
            for i in range(0, n - 1, 2):
                if rng.random() < 0.5:  # a complex-conjugate pair: a rotation block
                    d[i, i + 1], d[i + 1, i] = (w := rng.standard_normal()), -w
                    d[i + 1, i + 1] = d[i, i]
        a = q @ d @ q.conj().T
    elif structure == "nonnormal":
        a = np.triu(gaussian((n, n))) + 10 * np.triu(gaussian((n, n)), 1)
    elif structure == "block_diagonal":
        k = n // 2
        a = np.zeros((n, n), dtype=complex if complex_ else float)
        a[:k, :k], a[k:, k:] = gaussian((k, k)), gaussian((n - k, n - k))
    else:
        raise ValueError(f"unknown structure {structure!r}")
    scale = _norm1(a)
    a = a * (norm / scale) if scale > 0 else a
    if negative and structure in ("normal", "diagonal", "upper_triangular", "block_diagonal"):
        # Move the spectrum left: the eigenvalues of these are those of a + shift I's blocks.
        shift = np.max(np.linalg.eigvals(a).real) if n else 0.0
        a = a - max(shift, 0.0) * np.eye(n)
    return a


@dataclasses.dataclass(frozen=True)
class Batch:
    """A drawn batch: ``a`` in its dtype and ``exact`` (the same values in 64 bits)."""

    a: np.ndarray
    structures: tuple[str, ...]
    norms: tuple[float, ...]

    @property
    def exact(self) -> np.ndarray:
        wide = np.complex128 if np.iscomplexobj(self.a) else np.float64
        return self.a.astype(wide)

    @property
    def members(self) -> int:
        return math.prod(self.a.shape[:-2])

    def flat(self) -> np.ndarray:
        """The members in 64 bits, as an (m, n, n) stack."""
        return self.exact.reshape(-1, *self.a.shape[-2:])


@st.composite
def batches(
    draw,
    *,
    dtypes=DTYPES,
    sizes=SIZES,
    shapes=BATCHES,
    structures=STRUCTURES,
    log10_norm=(-8.0, 6.0),
    negative: bool = False,
) -> Batch:
    """A batch of matrices: shape, side and dtype from pools, values per member.

    Each member draws its structure, its 1-norm 10**x with x uniform in ``log10_norm``
    (and the zero matrix now and then), and a seed.
    """
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    n = draw(st.sampled_from(sizes))
    shape = draw(st.sampled_from(shapes))
    complex_ = dtype.kind == "c"
    members, kinds, norms = [], [], []
    for _ in range(math.prod(shape)):
        structure = draw(st.sampled_from(structures))
        lo, hi = log10_norm
        norm = draw(st.one_of(st.just(0.0), st.floats(lo, hi).map(lambda x: 10.0**x)))
        seed = draw(st.integers(0, 2**32 - 1))
        members.append(make_member(structure, n, norm, seed, complex_, negative))
        kinds.append(structure)
        norms.append(norm)
    wide = np.complex128 if complex_ else np.float64
    a = np.array(members, dtype=wide).reshape(*shape, n, n).astype(dtype)
    return Batch(a=a, structures=tuple(kinds), norms=tuple(norms))


def signs_and_scales(lo: float = -3.0, hi: float = 1.0):
    """A nonzero scalar t of either sign with |t| = 10**x, x uniform in [lo, hi]."""
    return st.tuples(st.sampled_from((-1.0, 1.0)), st.floats(lo, hi)).map(
        lambda p: p[0] * 10.0 ** p[1]
    )


# ---------------------------------------------------------------------------------
# Oracles and condition-scaled checks

ACCURATE = ("opt15", "ps")
U64 = 2.0**-53
#: Slack on the condition-scaled bounds: the forward error of a stable method is about
#: n u cond(A) (Higham, "Functions of Matrices", SIAM 2008, section 3.1 and 10.3).
SLACK = 20.0


def norm1(x: np.ndarray) -> np.ndarray:
    """1-norms of a stack of matrices (0 for an empty matrix)."""
    return np.abs(x).sum(axis=-2).max(axis=-1, initial=0.0)


def rel_errors(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-member normwise relative errors in the 1-norm, in 64 bits."""
    x = np.asarray(x).astype(ref.dtype)
    return norm1(x - ref) / np.maximum(norm1(ref), np.finfo(np.float64).tiny)


def error_bound(a: np.ndarray, dtype, factor: float = 1.0) -> float:
    """Condition-scaled error bound for exp(a) computed in ``dtype``, oracle in 64 bits."""
    n = a.shape[-1]
    cond = scipy.linalg.expm_cond(a) if n and np.any(a) else 1.0
    return SLACK * n * (unit_roundoff(dtype) + U64) * max(cond, 1.0) * factor


def representable(ref: np.ndarray, dtype) -> bool:
    """Whether every entry of ``ref`` is finite in ``dtype`` (with room for rounding)."""
    return bool(np.all(np.abs(ref) < np.finfo(np.dtype(dtype)).max / 2))


def oracle(batch: Batch) -> np.ndarray:
    """exp of every member in 64 bits (SciPy's Al-Mohy and Higham 2009)."""
    return np.array([expm64(m) for m in batch.flat()]).reshape(batch.exact.shape)


def expm64(m: np.ndarray) -> np.ndarray:
    """exp of one matrix in 64 bits; entries that overflow float64 are Inf, silently.

    SciPy's (Al-Mohy and Higham 2009) for n >= 3. For 2 x 2 matrices SciPy uses a
    closed form that loses digits to cancellation (the deep search found a relative
    error of 1.4e-13 on a 2 x 2 with condition 6.5, where jexpm's was 9e-17), so those
    are rounded from mpmath's at 30 digits instead.
    """
    if m.shape == (2, 2) and np.all(np.isfinite(m)) and np.abs(m).max() < 700:
        return mp_expm(m, dps=30)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return scipy.linalg.expm(m)


def check_against(result, batch: Batch, ref: np.ndarray, factor: float = 1.0) -> None:
    result = np.asarray(result)
    assert result.shape == batch.a.shape and result.dtype == batch.a.dtype
    flat_result = result.reshape(-1, *result.shape[-2:])
    flat_ref = ref.reshape(flat_result.shape)
    for i, (x, r, m) in enumerate(zip(flat_result, flat_ref, batch.flat(), strict=True)):
        if not representable(r, batch.a.dtype):
            continue
        tol = error_bound(m, batch.a.dtype, factor)
        assert np.all(np.isfinite(x)), f"member {i} ({batch.structures[i]}): non-finite"
        if tol >= 1:  # so ill conditioned that no digit is owed
            continue
        # Near the underflow threshold digits go (and XLA:CPU flushes subnormals to 0):
        # an absolute floor of n tiny / u.
        floor = (
            m.shape[-1]
            * float(np.finfo(np.dtype(batch.a.dtype)).tiny)
            / unit_roundoff(batch.a.dtype)
        )
        err = norm1(x.astype(r.dtype) - r)
        assert err <= tol * norm1(r) + floor, (
            f"member {i} ({batch.structures[i]}, ||a||_1 = {batch.norms[i]:.3g}): "
            f"relative error {rel_errors(x, r):.3g} > {tol:.3g}"
        )
