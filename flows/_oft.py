"""Orthogonal fine-tuning (OFT): a frozen linear map rotated by a block-diagonal exp(S - Sᵀ)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

import jexpm


class Frozen(nnx.Variable):
    """A pretrained array that is held fixed: not an ``nnx.Param``, so never trained."""


class OrthogonalLinear(nnx.Module):
    r"""Frozen linear map fine-tuned by a block-diagonal rotation of its output columns.

    Orthogonal fine-tuning (OFT) keeps a pretrained kernel :math:`W` (d_in, d_out)
    fixed and learns an orthogonal :math:`Q`, block-diagonal with k = d_out / b blocks
    of size b, each the exponential of a skew-symmetric matrix:

    .. math::

       y = x \, W \operatorname{blockdiag}(Q_1, \dots, Q_k) + \mathrm{bias},
       \qquad Q_j = e^{S_j - S_j^T}.

    ::

        x (.., d_in) ──► W (frozen) ──► [ Q_1 │ Q_2 │ … │ Q_k ] ──► + bias ──► y (.., d_out)
                                          ▲ exp(S_j − S_jᵀ), S trainable (k, b, b)

    :math:`Q` is exactly orthogonal (up to rounding) for every S, so the singular
    values of :math:`W` (its spectrum of "pretrained knowledge") are preserved and
    only the directions its output columns point in change; every rotation is
    reached with spectral norm at most :math:`\pi`, and the exponential map keeps
    a flat optimiser geometry (the Cayley transform used by the original OFT
    distorts it for large rotations). S starts at zero, so :math:`Q = I` and the
    layer starts as the frozen map exactly. The rotated kernel is formed block-wise,
    (d_in, k, b) times (k, b, b), without building the d_out x d_out matrix.

    Only ``s`` is an ``nnx.Param``; the kernel and bias are ``Frozen``
    variables, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)``, ``nnx.grad`` and
    ``nnx.state(model, nnx.Param)`` see S alone.

    Args:
      kernel: pretrained kernel W of shape (d_in, d_out), stored frozen in its own
        dtype.
      bias: optional pretrained bias of shape (d_out,), stored frozen.
      block_size: size b of the rotation blocks; must divide d_out. b = d_out gives
        one full rotation; smaller b means fewer parameters (d_out (b - 1) / 2 effective).
      max_norm: optional limit on each block's rotation: the skew part
        :math:`S_j - S_j^T` is scaled down so that its 1-norm, an upper bound on the
        largest rotation angle, is at most ``max_norm`` (see
        :func:`jexpm.orthogonal`). ``None`` (default) leaves it free.
      param_dtype: dtype of the trainable S (default float32).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); input, kernel, bias and S are
        cast to it and Q is computed by :func:`jexpm.orthogonal` in it (float32
        internally for bfloat16 and float16). ``None`` (default) promotes the dtypes
        of the input and the variables.
      rngs: random number streams; unused (the zero initialisation is deterministic)
        and kept for the Flax constructor convention.

    Attributes:
      kernel: ``Frozen`` W, shape (d_in, d_out).
      bias: ``Frozen`` bias, shape (d_out,), or ``None``.
      s: ``nnx.Param`` S, shape (d_out // block_size, block_size, block_size).

    Raises:
      ValueError: ``kernel`` is not 2-D, ``bias`` is not (d_out,), ``block_size``
        does not divide d_out, or ``max_norm`` is not positive.

    Examples:
      At initialisation the layer is the frozen map:

      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from flows import OrthogonalLinear
      >>> w = jax.random.normal(jax.random.key(0), (4, 6))
      >>> layer = OrthogonalLinear(w, block_size=3, rngs=nnx.Rngs(0))
      >>> layer.s.shape
      (2, 3, 3)
      >>> x = jax.random.normal(jax.random.key(1), (5, 4))
      >>> bool(jnp.array_equal(layer(x), x @ w))
      True

      and it stays a rotation of it whatever S is:

      >>> layer.s[...] = jax.random.normal(jax.random.key(2), (2, 3, 3))
      >>> q = layer.rotation()
      >>> bool(jnp.allclose(q.mT @ q, jnp.eye(3), atol=1e-5))
      True

    References:
      Z. Qiu et al., "Controlling Text-to-Image Diffusion by Orthogonal Finetuning",
      NeurIPS 2023 (arXiv:2306.07280).
    """

    def __init__(
        self,
        kernel: ArrayLike,
        bias: ArrayLike | None = None,
        *,
        block_size: int,
        max_norm: float | None = None,
        param_dtype=jnp.float32,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        del rngs  # S = 0 (Q = I) needs no randomness.
        kernel = jnp.asarray(kernel)
        if kernel.ndim != 2:
            raise ValueError(
                f"OrthogonalLinear: kernel must have shape (d_in, d_out), got shape {kernel.shape}"
            )
        d_out = kernel.shape[1]
        if bias is not None:
            bias = jnp.asarray(bias)
            if bias.shape != (d_out,):
                raise ValueError(
                    f"OrthogonalLinear: bias must have shape (d_out,) = ({d_out},) for kernel "
                    f"shape {kernel.shape}, got shape {bias.shape}"
                )
        if (
            isinstance(block_size, bool)
            or not isinstance(block_size, int)
            or block_size < 1
            or d_out % block_size
        ):
            raise ValueError(
                f"OrthogonalLinear: block_size must be a positive divisor of d_out = {d_out} "
                f"(kernel shape {kernel.shape}), got block_size={block_size!r}"
            )
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"OrthogonalLinear: max_norm must be positive, got {max_norm}")
        self.block_size = block_size
        self.max_norm = None if max_norm is None else float(max_norm)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.kernel = Frozen(kernel)
        self.bias = None if bias is None else Frozen(bias)
        k = d_out // block_size
        self.s = nnx.Param(jnp.zeros((k, block_size, block_size), param_dtype))

    @classmethod
    def from_linear(
        cls,
        linear: nnx.Linear,
        *,
        block_size: int,
        max_norm: float | None = None,
        param_dtype=jnp.float32,
        dtype=None,
        rngs: nnx.Rngs,
    ) -> OrthogonalLinear:
        """Wrap a (pretrained) ``nnx.Linear``: its kernel and bias become frozen.

        Args:
          linear: the layer to fine-tune; it is not modified.
          block_size: as in :class:`OrthogonalLinear`.
          max_norm: as in :class:`OrthogonalLinear`.
          param_dtype: as in :class:`OrthogonalLinear`.
          dtype: computation dtype; ``None`` (default) takes ``linear.dtype``.
          rngs: as in :class:`OrthogonalLinear`.

        Returns:
          An :class:`OrthogonalLinear` equal to ``linear`` at initialisation.

        Raises:
          ValueError: as :class:`OrthogonalLinear`.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from flows import OrthogonalLinear
          >>> linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
          >>> layer = OrthogonalLinear.from_linear(linear, block_size=2, rngs=nnx.Rngs(0))
          >>> x = jnp.ones((2, 3))
          >>> bool(jnp.array_equal(layer(x), linear(x)))
          True
        """
        bias = None if linear.bias is None else linear.bias[...]
        return cls(
            linear.kernel[...],
            bias,
            block_size=block_size,
            max_norm=max_norm,
            param_dtype=param_dtype,
            dtype=linear.dtype if dtype is None else dtype,
            rngs=rngs,
        )

    def _rotation(self, dtype) -> jax.Array:
        return jexpm.orthogonal(self.s[...].astype(dtype), max_norm=self.max_norm)

    def rotation(self) -> jax.Array:
        r"""The rotation blocks :math:`Q_j = e^{S_j - S_j^T}` (norm-limited if asked).

        Returns:
          Q, shape (d_out // block_size, block_size, block_size), in ``dtype`` if set,
          else in ``param_dtype``.
        """
        return self._rotation(self.s.dtype if self.dtype is None else self.dtype)

    def _rotated_kernel(self, dtype) -> jax.Array:
        w = self.kernel[...].astype(dtype)
        d_in, d_out = w.shape
        k, b, _ = self.s.shape
        q = self._rotation(dtype)
        return jnp.einsum("ikb,kbc->ikc", w.reshape(d_in, k, b), q).reshape(d_in, d_out)

    def merged_kernel(self) -> jax.Array:
        r"""The fine-tuned kernel :math:`W \operatorname{blockdiag}(Q)`, for merging.

        After fine-tuning, a plain linear layer with this kernel (and the frozen bias)
        computes the same map without the adapter.

        Returns:
          Array of shape (d_in, d_out), in ``dtype`` if set, else in the promoted dtype
          of the kernel and S.
        """
        return self._rotated_kernel(self._dtype())

    def _dtype(self, *arrays):
        if self.dtype is not None:
            return self.dtype
        bias = () if self.bias is None else (self.bias[...],)
        return jnp.result_type(*arrays, self.kernel[...], self.s[...], *bias)

    def __call__(self, x: ArrayLike) -> jax.Array:
        r"""Apply the rotated map, :math:`x W \operatorname{blockdiag}(Q) + \mathrm{bias}`.

        Args:
          x: input of shape (..., d_in).

        Returns:
          Output of shape (..., d_out) in the computation dtype.

        Raises:
          ValueError: the last axis of ``x`` is not d_in.
        """
        x = jnp.asarray(x)
        d_in = self.kernel.shape[0]
        if x.ndim < 1 or x.shape[-1] != d_in:
            raise ValueError(
                f"OrthogonalLinear: input must have shape (..., d_in) = (..., {d_in}) for "
                f"kernel shape {self.kernel.shape}, got shape {x.shape}"
            )
        dtype = self._dtype(x)
        y = x.astype(dtype) @ self._rotated_kernel(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y
