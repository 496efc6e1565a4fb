"""Every jexpm test runs under JAX's strict modes.

``jax_numpy_rank_promotion="raise"`` (as JAX's own test suite runs) and
``jax_numpy_dtype_promotion="strict"`` turn any implicit broadcast of arrays of
different ranks, and any implicit promotion between dtypes, into an error. jexpm
must work in both, and in JAX's default modes (the doctests under ``jexpm/``, the
flows tests and the examples run in those). x64 is switched per test, for 64-bit
dtypes, so both settings of it are covered.
"""

import jax
import pytest


@pytest.fixture(autouse=True)
def _strict_jax_modes():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield
