"""Shared test helpers: tolerance tables, norms, matrix generators and oracles."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

# Relative tolerances per dtype, as multiples of its machine epsilon where possible.
EPS = {np.dtype(t): float(jnp.finfo(t).eps) for t in ("float32", "float64")}
EPS[np.dtype("complex64")] = EPS[np.dtype("float32")]
EPS[np.dtype("complex128")] = EPS[np.dtype("float64")]


def rel_err(x, ref) -> float:
    """Normwise relative error in the 1-norm, computed in float64 / complex128."""
    x = np.asarray(x, dtype=np.result_type(np.asarray(x).dtype, np.float64))
    ref = np.asarray(ref, dtype=x.dtype)
    num = np.abs(x - ref).sum(axis=-2).max(axis=-1)
    den = np.abs(ref).sum(axis=-2).max(axis=-1)
    return float(np.max(num / den))


def norm1(a) -> np.ndarray:
    return np.abs(np.asarray(a)).sum(axis=-2).max(axis=-1)


def random_with_norm(rng, shape, norm, dtype=np.float64, kind="gaussian"):
    """Random matrices (batch allowed) scaled to the given 1-norm per member."""
    a = rng.standard_normal(shape)
    if kind == "nonnormal":  # strongly non-normal: upper triangular-ish with a large off part
        a = np.triu(a) + np.triu(rng.standard_normal(shape), 1) * 10
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        a = a + 1j * rng.standard_normal(shape)
    a = a * (norm / norm1(a))[..., None, None]
    return a.astype(dtype)


@functools.cache
def _mp_expm_cached(key: bytes, shape: tuple, dps: int) -> np.ndarray:
    a = np.frombuffer(key, dtype=np.complex128).reshape(shape)
    with mpmath.workdps(dps):
        m = mpmath.matrix([[mpmath.mpc(z.real, z.imag) for z in row] for row in a])
        e = mpmath.expm(m)
        return np.array([[complex(e[i, j]) for j in range(shape[1])] for i in range(shape[0])])


def mp_expm(a, dps: int = 60) -> np.ndarray:
    """exp(a) in mpmath at ``dps`` digits, rounded to complex128 (or float64)."""
    a = np.asarray(a)
    out = _mp_expm_cached(a.astype(np.complex128).tobytes(), a.shape, dps)
    return out.real if not np.iscomplexobj(a) else out


def enable_x64():
    """Context manager switching JAX to 64-bit for one test."""
    return jax.enable_x64(True)


def mp_phi1(a, dps: int = 60) -> np.ndarray:
    """phi1(a) = sum_k a^k / (k+1)! in mpmath at ``dps`` digits, from the block identity
    expm([[A, I], [0, 0]]) = [[e^A, phi1(A)], [0, I]] (Higham, Functions of Matrices,
    (10.41)); rounded to float64 / complex128."""
    a = np.asarray(a)
    n = a.shape[-1]
    block = np.zeros((2 * n, 2 * n), dtype=a.dtype)
    block[:n, :n] = a
    block[:n, n:] = np.eye(n)
    return mp_expm(block, dps)[:n, n:]
