"""Layers whose gradients keep little for the backward pass.

Reverse-mode differentiation keeps some of a layer's intermediate arrays (its
residuals) until the backward pass reaches it. Under the flow steps' ``scan`` every
kept array becomes a stacked buffer, one slice per step: zero-filled, written in the
forward loop and read back in the backward one. For the elementwise layers of the
coupling networks those buffers cost more than the arithmetic they save, so:

- :func:`elu` keeps only its output. ELU's derivative is 1 where x > 0 and
  e^x = elu(x) + 1 elsewhere (JAX's own rule for ``expm1`` reads e^x the same way),
  and the output is also the next convolution's input, which that convolution's
  gradient keeps anyway. JAX's rule for ``jax.nn.elu`` keeps a mask of x > 0 and
  e^x besides. (PyTorch's ELU backward likewise accepts the result instead of the input.)
- :func:`recomputed` runs a layer under ``nnx.remat`` (``jax.checkpoint``): it keeps
  only the layer's inputs and computes its intermediates again in the backward pass.
  The coupling network's LayerNorm (which kept x - mean, its square and the scaled
  result) and the coupling's tanh parametrisation (which kept tanh and 1 - tanh²)
  run this way.

For a Glow at the CIFAR-10 shape (batch 64, 3 levels of 8/4/2 steps, coupling networks
of 32 channels and 1 residual block, the exponentials replaced by I + A) these cut what
the training step keeps from 435 to 232 MB, and a coupling network keeps 7 arrays
instead of 28. The values and derivatives are the same functions; only where rounding
happens may differ (docs/results/glow_step.md has the step times). Like the
convolutions' (:mod:`flows._convolution`), :func:`elu`'s rule is a custom VJP, so it
supports reverse mode only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

F = TypeVar("F", bound=Callable)


@jax.custom_vjp
def elu(x: jax.Array) -> jax.Array:
    """``jax.nn.elu(x)`` (alpha 1), whose gradient keeps only the output."""
    return jax.nn.elu(x)


def _elu_forward(x):
    y = jax.nn.elu(x)
    return y, y


def _elu_backward(y, dy):
    return (jnp.where(y > 0, dy, dy * (y + 1)),)


elu.defvjp(_elu_forward, _elu_backward)


def recomputed(f: F) -> F:
    """``f`` (a function or method of modules and arrays) recomputed in the backward pass.

    In NNX's tree mode, as the scans (:mod:`flows._stacked`): it also runs inside a
    ``jax.jit`` or ``jax.grad`` that closes over the model.
    """
    return nnx.remat(f, graph=False)
