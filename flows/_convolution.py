"""Convolutions whose gradients stay on the fast path inside loops.

The flow steps and residual blocks run under ``nnx.scan``, i.e. inside an XLA while
loop. XLA:CPU rewrites a convolution into the form its optimised (Eigen) kernel
accepts only outside loop bodies; inside one, a convolution in any other form runs
through a naive emitted loop (jax-ml/jax#12868). The forward convolution of an NHWC
image with an HWIO kernel is already in that form, but JAX's transposition rules give
its two gradients other dimension layouts: in the CIFAR-10 training step this made
the scanned model 17x slower than the same model unrolled.

:func:`conv_general_dilated` has the signature of ``jax.lax.conv_general_dilated``
and, for the stride-1 undilated NHWC convolutions the flows use, a VJP that writes
both gradients as NHWC/HWIO convolutions of explicitly transposed operands:

- input gradient: the output gradient convolved with the kernel flipped in space and
  with its in/out channels swapped, padded by ``k - 1 - pad``;
- kernel gradient: the input with channels as batch, ``(C, H, W, N)``, convolved with
  the output gradient read as a kernel, ``(H', W', N, O)``; the result ``(C, kh, kw, O)``
  is transposed back to ``(kh, kw, C, O)``.

Every other case is passed to ``jax.lax.conv_general_dilated`` unchanged. Values and
gradients are the same sums either way; only their order of evaluation may differ.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from . import _random

_NHWC = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], ...]


def conv(in_features: int, out_features: int, kernel_size: Sequence[int], **kwargs) -> nnx.Conv:
    """``nnx.Conv`` with :func:`conv_general_dilated` as its convolution.

    Its kernel starts as nnx's default would (LeCun normal), drawn as one matrix
    (:func:`flows._random.lecun_normal`) unless ``kernel_init`` says otherwise.
    """
    kwargs.setdefault("kernel_init", _random.lecun_normal)
    return nnx.Conv(
        in_features, out_features, kernel_size, conv_general_dilated=conv_general_dilated, **kwargs
    )


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    out_sharding: Any = None,
) -> jax.Array:
    """``jax.lax.conv_general_dilated``, with loop-friendly gradients where it can.

    Stride-1, undilated, ungrouped 2-D convolutions in NHWC/HWIO layout go through the
    custom VJP described in the module docstring; all others through JAX's own rule.
    """
    plain = (
        lhs.ndim == 4
        and all(s == 1 for s in window_strides)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and out_sharding is None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
            out_sharding=out_sharding,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    pads: Padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, pads, precision)


def _plain_conv(x, w, pads: Padding, precision) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, w: jax.Array, pads: Padding, precision) -> jax.Array:
    return _plain_conv(x, w, pads, precision)


def _conv_forward(x, w, pads, precision):
    return _plain_conv(x, w, pads, precision), (x, w)


def _conv_backward(pads, precision, residuals, dy):
    x, w = residuals
    kernel = w.shape[:2]
    flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
    dx_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel, pads, strict=True))
    dx = _plain_conv(dy, flipped, dx_pads, precision)
    channels_as_batch = jnp.transpose(x, (3, 1, 2, 0))  # (C, H, W, N)
    dy_as_kernel = jnp.transpose(dy, (1, 2, 0, 3))  # (H', W', N, O)
    dw = _plain_conv(channels_as_batch, dy_as_kernel, pads, precision)  # (C, kh, kw, O)
    return dx, jnp.transpose(dw, (1, 2, 0, 3))


_conv.defvjp(_conv_forward, _conv_backward)
