"""Random draws that XLA:CPU compiles quickly: ``jax.random``'s values, drawn flat.

JAX fills a random array in row-major order, so drawing ``math.prod(shape)`` numbers
and reshaping gives exactly the values of drawing ``shape`` directly (checked with the
default threefry PRNG, with ``jax_threefry_partitionable`` on and off, and with
``rbg``; tests/flows/test_random.py checks the default). XLA:CPU compiles the flat
draw far faster: measured on a 2-core AMD EPYC CPU (JAX 0.10.2, one compilation each),
``jax.random.uniform`` of shape (8, 32, 32, 3) in 0.45 s against 0.12 s flat,
(3, 3, 8, 16) in 0.69 s against 0.12 s, and a latent of shape (4, 16, 16, 12) in
2.2 s against 0.11 s; the flat draws also run about twice as fast (0.5 against
1.2 ms for 64 x 32 x 32 x 3 uniforms). Model creation, the training step and
sampling each make several such draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype)`` on [0, 1), drawn flat."""
    return jax.random.uniform(key, (math.prod(shape),), dtype).reshape(shape)


# The standard deviation of a standard normal truncated to (-2, 2).
_TRUNCATED_STD = 0.87962566103423978


def lecun_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``jax.nn.initializers.lecun_normal()`` (nnx's default kernel initialiser), drawn flat.

    A normal truncated to two standard deviations and scaled to variance 1 / fan_in,
    fan_in being the product of all but the last (output) axis: the same values as
    the default for dense and convolution kernels.
    """
    variance = jnp.array(1.0 / math.prod(shape[:-1]), dtype)
    stddev = jnp.sqrt(variance) / jnp.array(_TRUNCATED_STD, dtype)
    draw = jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype)
    return draw.reshape(shape) * stddev
