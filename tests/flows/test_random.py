"""The flat draws of flows._backend are jax.random's values, bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flows import _backend

# Few shapes: the reference draws are the slow compilations flows._backend's flat draws avoid.
SHAPES = [(7, 5), (3, 3, 2, 4)]
DTYPES = [jnp.float32, jnp.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_normal_and_uniform_equal_jax_random(dtype):
    key = jax.random.key(7)
    for shape in SHAPES:
        for ours, theirs in (
            (_backend.normal, jax.random.normal),
            (_backend.uniform, jax.random.uniform),
        ):
            got, want = ours(key, shape, dtype), theirs(key, shape, dtype)
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_lecun_normal_equals_the_default_kernel_initialiser(dtype):
    key = jax.random.key(8)
    default = jax.nn.initializers.lecun_normal()
    for shape in SHAPES:
        got, want = _backend.lecun_normal(key, shape, dtype), default(key, shape, dtype)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_the_flows_convolutions_start_as_nnx_would():
    ours = _backend.conv(6, 8, (3, 3), rngs=nnx.Rngs(0))
    theirs = nnx.Conv(6, 8, (3, 3), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours.kernel[...], theirs.kernel[...])
