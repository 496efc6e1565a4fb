"""The options every public function shares: method, tol, dtypes and input checks.

One path for all of them, so that ``expm``, ``phi1``, ``expm_lowrank``,
``expm_frechet``, ``orthogonal`` and the flow layers accept and reject the same things
with the same messages, at trace time.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

#: The approximation methods of every jexpm function.
METHODS = ("opt15", "ps", "baseline")
#: The method names as a type, for annotations.
Method = Literal["opt15", "ps", "baseline"]

_LOW_PRECISION = (np.dtype(jnp.bfloat16), np.dtype(jnp.float16))

# JAX's rule for promoting non-inexact input to an inexact dtype (what
# ``jax.numpy`` functions such as ``jnp.sin`` and ``jax.scipy.linalg.expm`` do):
# 64-bit integers become float64, every other integer and bool becomes float32;
# float64 is then canonicalised to float32 when x64 is off.
_WIDE_INTEGERS = (np.dtype("int64"), np.dtype("uint64"))


def check_method(method: object, func: str) -> Method:
    """``method``, or ``ValueError`` if it is not one of :data:`METHODS`."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{func}: method must be one of {METHODS}, got {method!r}")
    return method  # type: ignore[return-value]


def check_tol(tol: object, func: str) -> float | None:
    """``tol`` as a Python float in (0, 1), or None; checked before it becomes static.

    Raises:
      TypeError: ``tol`` is not a Python (or NumPy) number, e.g. a traced array.
      ValueError: ``tol`` is outside (0, 1).
    """
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"{func}: tol must be a Python number (it selects the algorithm at trace "
            f"time), got {type(tol).__name__}"
        )
    tol = float(tol)
    if not (0 < tol < 1):
        raise ValueError(f"{func}: tol must satisfy 0 < tol < 1, got {tol}")
    return tol


def check_max_squarings(max_squarings: object, func: str) -> int | None:
    """``max_squarings`` as a non-negative Python int, or None (no cap)."""
    if max_squarings is None:
        return None
    if isinstance(max_squarings, bool) or not isinstance(max_squarings, (int, np.integer)):
        raise TypeError(
            f"{func}: max_squarings must be a Python int or None, "
            f"got {type(max_squarings).__name__}"
        )
    if max_squarings < 0:
        raise ValueError(f"{func}: max_squarings must be >= 0, got {max_squarings}")
    return int(max_squarings)


def inexact_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype ``jax.numpy`` promotes ``dtype`` to for an inexact computation."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return dtype
    wide = dtype in _WIDE_INTEGERS
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64 if wide else np.float32))


def as_inexact(*arrays: jax.typing.ArrayLike) -> list[jax.Array]:
    """The arrays converted to their common inexact dtype (JAX's promotion rules).

    Under ``jax_numpy_dtype_promotion="strict"`` arrays of different dtypes raise
    JAX's own ``TypePromotionError``, as ``jax.numpy`` does.
    """
    xs = [jnp.asarray(x) for x in arrays]
    dtype = inexact_dtype(jnp.result_type(*xs) if len(xs) > 1 else xs[0].dtype)
    return [x.astype(dtype) for x in xs]


def check_numeric(func: str, **arrays) -> None:
    """``TypeError`` naming the argument and its shape unless each is numeric.

    Booleans, integers, floats and complex numbers (of any width, bfloat16 included)
    pass, and are promoted as ``jax.numpy`` promotes them; strings, objects, dates and
    structured arrays do not. Checked before anything is traced, so that the error
    names the argument rather than the jitted function it would reach.
    """
    for name, x in arrays.items():
        if x is None:
            continue
        if not hasattr(x, "dtype"):
            try:
                x = np.asarray(x)
            except (TypeError, ValueError) as error:  # ragged nesting, say
                raise TypeError(f"{func}: {name} is not an array: {error}") from None
        if not (jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.bool_)):
            raise TypeError(
                f"{func}: {name} must hold numbers (bool, int, float or complex); got "
                f"dtype {x.dtype} with shape {x.shape}"
            )


def check_square(a: jax.Array, name: str, func: str) -> None:
    """``ValueError`` naming the shape unless ``a`` is (..., n, n)."""
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"{func}: {name} must be a square matrix or a stack of them, shape (..., n, n); "
            f"got shape {a.shape}"
        )


def working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the algorithm runs in: float32 for bfloat16 and float16 input.

    Measured on a 2-core CPU (one product, batched): bfloat16 operands with float32
    accumulation took 0.07 / 2.5 / 5.5 ms against float32's 0.11 / 2.4 / 3.0 ms for
    64x48x48 / 4096x24x24 / 16384x12x12, and float16 0.2 / 3.0 / 3.9 ms: no gain
    worth the rounding of every intermediate. So low-precision input is computed in
    float32, with the tolerance of the input dtype (hence fewer products), and rounded
    back once. Accelerators with native bfloat16 units may change this choice.
    """
    return np.dtype(np.float32) if np.dtype(dtype) in _LOW_PRECISION else np.dtype(dtype)


def tolerance(tol: float | None, dtype: np.dtype) -> float:
    """``tol``, with None meaning the unit roundoff of ``dtype``."""
    return float(jnp.finfo(dtype).eps) / 2 if tol is None else tol
