"""What flows does for XLA's backends: one record per backend and the code it selects.

Everything in flows that exists for a compiler's speed rather than for the model lives
here; the model modules call these functions and nothing else of XLA's. The measured
reasons and their timings are in docs/design.md, section 9a ("Backend workarounds"),
cited by item:

- :data:`TUNING` (item 1, 2): per backend, the XLA compile options of the flows'
  programs (on XLA:CPU convolutions out of YNNPACK, products and sums in it) and
  whether convolutions write their gradients in the layout XLA:CPU's kernels accept
  inside loops (jax-ml/jax#12868). A backend without an entry compiles with no options
  and JAX's own convolution gradients, the choices that need no measurement.
- :func:`conv` (item 2): ``nnx.Conv`` whose stride-1 NHWC convolutions go through
  :func:`conv_general_dilated`, with that gradient where the backend's record asks.
- :func:`elu` and :func:`recomputed` (item 3): what the coupling networks keep for the
  backward pass under the steps' scan (any backend: fewer stacked buffers).
- :func:`normal`, :func:`uniform`, :func:`lecun_normal` (item 4): ``jax.random``'s
  values drawn flat, which XLA:CPU compiles several times faster (any backend: the same
  values).

The convolution's and ELU's derivative rules are custom JVPs whose tangents are
primitives with their own transposes: forward mode (``jax.jvp``, ``jax.jacfwd``,
``jax.linearize``) passes through the coupling networks, and reverse mode keeps and
computes what items 2 and 3 ask for (docs/design.md, section 9a, item 5).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

F = TypeVar("F", bound=Callable)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The backend choices of one XLA backend.

    Attributes:
      compiler_options: XLA options for the training, evaluation and sampling programs
        (``jax.jit(..., compiler_options=...)``); dropped if the installed XLA does not
        know them.
      loop_convolution_gradients: stride-1 NHWC convolutions write their input and
        kernel gradients as NHWC/HWIO convolutions of transposed operands.
    """

    compiler_options: Mapping[str, str]
    loop_convolution_gradients: bool


CPU = Tuning(
    # Of the kinds of computation XLA:CPU hands to YNNPACK by default (single products,
    # single convolutions, reductions), single products and reductions
    # (docs/design.md, section 9a, item 1). The option takes a comma-separated list.
    compiler_options={
        "xla_cpu_experimental_ynn_fusion_type": (
            "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
        )
    },
    # Inside a while loop XLA:CPU runs a convolution in the layout it was written in
    # (docs/design.md, section 9a, item 2).
    loop_convolution_gradients=True,
)

#: The choices that need no measurement: no options, JAX's own gradients.
ACCELERATOR = Tuning(compiler_options={}, loop_convolution_gradients=False)

#: Backend name (``jax.default_backend()``) -> its choices.
TUNING: Mapping[str, Tuning] = {"cpu": CPU}


def for_backend(backend: str | None = None) -> Tuning:
    """The choices of ``backend`` (default: JAX's default backend)."""
    return TUNING.get(backend or jax.default_backend(), ACCELERATOR)


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """A fresh dict of the compile options of ``backend``, or none if XLA rejects them."""
    options = dict(for_backend(backend).compiler_options)
    return options if options and _options_known(tuple(options.items())) else {}


@functools.cache
def _options_known(options: tuple[tuple[str, str], ...]) -> bool:
    """Whether XLA accepts ``options`` (one tiny compilation, once)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


# ----------------------------------------------------------------- convolutions (item 2)

_NHWC = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], ...]


def conv(in_features: int, out_features: int, kernel_size: Sequence[int], **kwargs) -> nnx.Conv:
    """``nnx.Conv`` whose kernel is drawn by :func:`lecun_normal` (nnx's default, flat).

    Where the backend's :class:`Tuning` asks for it (decided here, once per layer),
    the convolution is :func:`conv_general_dilated`.
    """
    kwargs.setdefault("kernel_init", lecun_normal)
    if for_backend().loop_convolution_gradients:
        kwargs.setdefault("conv_general_dilated", conv_general_dilated)
    return nnx.Conv(in_features, out_features, kernel_size, **kwargs)


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
    """``jax.lax.conv_general_dilated``, with loop-friendly gradients where they help.

    Stride-1, undilated, ungrouped 2-D convolutions in NHWC/HWIO layout are the
    primitive ``flows_conv_nhwc``, bilinear in (input, kernel) like lax's: its JVP is
    the same convolution of each tangent with the other operand, so forward mode
    passes, and its transposes are NHWC/HWIO convolutions. The input gradient is the
    output gradient convolved with the kernel flipped in space, in/out channels swapped,
    padded by ``k - 1 - pad``; the kernel gradient is the input with channels as batch,
    ``(C, H, W, N)``, convolved with the output gradient read as a kernel
    ``(H', W', N, O)``, transposed back from ``(C, kh, kw, O)``. The same sums as lax's
    rules; only their order of evaluation may differ. Under ``vmap`` a mapped input
    joins the batch and a mapped kernel the output channels; with both mapped, lax's
    grouped convolution (and its gradients) is used. All other cases go to ``lax``.
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


def _plain_conv(x, w, *, pads: Padding, precision) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
    )


#: ``_plain_conv(x, w)`` as one bilinear primitive: the convolution's own derivative
#: rules, so that forward mode passes and reverse mode keeps (x, w) and transposes into
#: NHWC/HWIO convolutions (docs/design.md, section 9a, items 2 and 5).
_conv_p = Primitive("flows_conv_nhwc")


def _conv(x: jax.Array, w: jax.Array, pads: Padding, precision) -> jax.Array:
    return _conv_p.bind(x, w, pads=pads, precision=precision)


def _conv_input_transpose(dy, x, w, *, pads, precision):
    """The input gradient: ``dy`` convolved with the kernel turned around.

    The kernel flipped in space, in and out channels swapped, padded by ``k - 1 - pad``
    (stride 1: the input's size again).
    """
    kernel = w.shape[:2]
    flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
    dx_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel, pads, strict=True))
    return _conv(dy, flipped, dx_pads, precision)


def _conv_kernel_transpose(dy, x, w, *, pads, precision):
    """The kernel gradient: the input convolved with ``dy`` as the kernel.

    The input with channels as batch, ``(C, H, W, N)``, convolved with ``dy`` read as a
    kernel ``(H', W', N, O)``, transposed back from ``(C, kh, kw, O)``.
    """
    channels_as_batch = jnp.transpose(x, (3, 1, 2, 0))  # (C, H, W, N)
    dy_as_kernel = jnp.transpose(dy, (1, 2, 0, 3))  # (H', W', N, O)
    dw = _conv(channels_as_batch, dy_as_kernel, pads, precision)  # (C, kh, kw, O)
    return jnp.transpose(dw, (1, 2, 0, 3))


def _conv_batched(args, dims, *, pads, precision):
    """vmap: a mapped input joins the batch axis, a mapped kernel the output channels."""
    (x, w), (dx, dw) = args, dims
    if dw is None:
        x = jnp.moveaxis(x, dx, 0)
        y = _conv(x.reshape(-1, *x.shape[2:]), w, pads, precision)
        return y.reshape(*x.shape[:2], *y.shape[1:]), 0
    if dx is None:
        w = jnp.moveaxis(w, dw, 3)  # (kh, kw, C, B, O)
        y = _conv(x, w.reshape(*w.shape[:3], -1), pads, precision)
        return y.reshape(*y.shape[:3], *w.shape[3:]), 3
    # Both mapped: lax's own batching (a grouped convolution) and from there lax's
    # own derivative rules.
    conv = functools.partial(_plain_conv, pads=pads, precision=precision)
    return jax.vmap(conv, in_axes=(dx, dw))(x, w), 0


def _conv_abstract(x, w, *, pads, precision):
    size = tuple(
        n + lo + hi - k + 1 for n, k, (lo, hi) in zip(x.shape[1:3], w.shape[:2], pads, strict=True)
    )
    return ShapedArray((x.shape[0], *size, w.shape[3]), x.dtype)


_conv_p.def_impl(_plain_conv)
_conv_p.def_abstract_eval(_conv_abstract)
mlir.register_lowering(_conv_p, mlir.lower_fun(_plain_conv, multiple_results=False))
ad.defbilinear(_conv_p, _conv_input_transpose, _conv_kernel_transpose)
batching.primitive_batchers[_conv_p] = _conv_batched


# ------------------------------------------------------------ what is kept (item 3)


@jax.custom_jvp
def elu(x: jax.Array) -> jax.Array:
    """``jax.nn.elu(x)`` (alpha 1), whose derivative is read from the output only.

    ELU's derivative is 1 where x > 0 and e^x = elu(x) + 1 elsewhere, and the output is
    also the next convolution's input, which that convolution's gradient keeps anyway.
    The tangent is the primitive ``flows_elu_tangent`` of (output, direction), linear in
    the direction and its own transpose, so reverse mode keeps only the output.
    """
    return jax.nn.elu(x)


@elu.defjvp
def _elu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = jax.nn.elu(x)
    return y, _elu_tangent_p.bind(y, dx)


#: ``(y, t) -> t * elu'(x)`` for ``y = elu(x)``: ``t`` where y > 0, ``t * (y + 1)``
#: elsewhere.
_elu_tangent_p = Primitive("flows_elu_tangent")


def _elu_tangent(y, t):
    return jnp.where(y > 0, t, t * (y + 1))


def _elu_tangent_jvp(primals, tangents):
    (y, t), (dy, dt) = primals, tangents
    out = _elu_tangent_p.bind(y, t)
    terms = []
    if type(dt) is not ad.Zero:
        terms.append(_elu_tangent_p.bind(y, dt))
    if type(dy) is not ad.Zero:
        terms.append(jnp.where(y > 0, jnp.zeros_like(t), t * dy))
    return out, functools.reduce(jnp.add, terms)


def _elu_tangent_transpose(ct, y, t):
    if ad.is_undefined_primal(y):
        raise ValueError("flows_elu_tangent is linear in its direction only")
    if type(ct) is ad.Zero:
        return None, ad.Zero(t.aval)
    return None, _elu_tangent_p.bind(y, ct)  # a diagonal map: its own transpose


def _elu_tangent_batched(args, dims):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    y, t = (
        jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args, dims, strict=True)
    )
    return _elu_tangent_p.bind(y, t), 0


_elu_tangent_p.def_impl(_elu_tangent)
_elu_tangent_p.def_abstract_eval(lambda y, t: ShapedArray(t.shape, t.dtype))
mlir.register_lowering(_elu_tangent_p, mlir.lower_fun(_elu_tangent, multiple_results=False))
ad.primitive_jvps[_elu_tangent_p] = _elu_tangent_jvp
ad.primitive_transposes[_elu_tangent_p] = _elu_tangent_transpose
batching.primitive_batchers[_elu_tangent_p] = _elu_tangent_batched


def recomputed(f: F) -> F:
    """``f`` (a function or method of modules and arrays) recomputed in the backward pass.

    ``nnx.remat`` in NNX's tree mode, as the scans: it also runs inside a ``jax.jit`` or
    ``jax.grad`` that closes over the model.
    """
    return nnx.remat(f, graph=False)


# ------------------------------------------------------------ random draws (item 4)


def normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat (the same values)."""
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype)`` on [0, 1), drawn flat (the same values)."""
    return jax.random.uniform(key, (math.prod(shape),), dtype).reshape(shape)


def lecun_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Nnx's default kernel initialiser, drawn as one (fan_in, out) matrix.

    ``jax.nn.initializers.lecun_normal()`` itself: fan_in is the product of all but the
    last axis for dense and convolution kernels alike, so the matrix has the kernel's
    variance and, reshaped, its values.
    """
    matrix = (math.prod(shape[:-1]), shape[-1])
    return jax.nn.initializers.lecun_normal()(key, matrix, dtype).reshape(shape)
