"""Shared test configuration: compiled programs do not outlive their test module.

The suite runs in one process and compiles thousands of programs (Glow variants, every
order and transform of expm). JAX keeps them cached for the process's lifetime; clearing
the caches after each module keeps the process's memory that of one module's work.
"""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    yield
    jax.clear_caches()
