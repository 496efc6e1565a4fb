"""The model's options: one frozen record, checked once, where it is built.

A :class:`GlowOptions` is what :class:`flows.Glow`, its levels, steps and layers are
built from; the training :class:`flows.configs.Config` holds one. Every option is
checked in ``__post_init__``, so a layer that receives the record trusts it: the
method and tolerance, the coupling's name, the step counts and ``scan_unroll`` are
each checked here and nowhere else in flows. (jexpm checks its own arguments again at
its calls; that is the library's boundary, not the model's.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from . import _matexp


@dataclasses.dataclass(frozen=True)
class GlowOptions:
    """Everything but the image shape that a :class:`flows.Glow` is built from.

    Attributes:
      levels: number of levels L.
      steps_per_level: flow steps per level, one per level (an int is taken for every
        level).
      coupling: a name in ``flows.COUPLINGS``: "matrix_exp", "affine" or "additive".
      hidden_channels: width of the coupling networks.
      residual_blocks: residual blocks per coupling network.
      low_rank: matrix-exp couplings only: ``None`` for low-rank exactly when the
        transformed half has more than 24 channels, or ``True``/``False`` everywhere.
      rank: rank of the low-rank couplings.
      coupling_action: matrix-exp couplings apply their exponential to each pixel's
        vector without forming it (``True``), form it (``False``), or ``None`` for the
        faster per size (:class:`flows.MatrixExpCoupling`).
      expm_method: the exponential of every matrix-exp layer, one of
        ``flows.EXPM_METHODS`` ("opt15", "ps", "baseline", "jax.scipy") or a name
        registered with ``flows.register_exponential`` (the command line takes the
        built-in ones).
      expm_tol: tolerance of the jexpm methods (``None``: the dtype's unit roundoff).
      param_dtype: dtype of every parameter.
      scan_unroll: flow steps and residual blocks run per iteration of their scans, as
        ``jax.lax.scan``'s ``unroll``; ``True`` unrolls them (compile time then grows
        with the depth; on XLA:CPU faster steps, docs/design.md section 9).

    Raises:
      ValueError: a bad level or step count, coupling, width, method, tolerance,
        rank or unroll.
      TypeError: a tolerance that is not a Python number.
    """

    levels: int = 3
    steps_per_level: tuple[int, ...] = (8, 4, 2)
    coupling: str = "matrix_exp"
    hidden_channels: int = 128
    residual_blocks: int = 8
    low_rank: bool | None = None
    rank: int = 3
    coupling_action: bool | None = None
    # The command line parses the Literal: a config names a built-in method (a method
    # registered in one process is unknown to the next); code may pass any registered one.
    expm_method: _matexp.Method | str = "opt15"
    expm_tol: float | None = None
    param_dtype: Any = jnp.float32
    scan_unroll: int | bool = 1

    def __post_init__(self):
        from ._couplings import COUPLINGS

        levels = self.levels
        if not (isinstance(levels, int) and levels >= 1):
            raise ValueError(f"levels must be a positive int, got {levels!r}")
        steps = self.steps_per_level
        steps = (steps,) * levels if isinstance(steps, int) else tuple(steps)
        if len(steps) != levels or any(not isinstance(k, int) or k < 1 for k in steps):
            raise ValueError(
                f"steps_per_level must be a positive int or have one entry per level "
                f"(levels={levels}), each a positive int; got {self.steps_per_level!r}"
            )
        object.__setattr__(self, "steps_per_level", steps)
        if self.coupling not in COUPLINGS:
            raise ValueError(
                f"unknown coupling {self.coupling!r}; choose one of {tuple(COUPLINGS)}"
            )
        if not self.hidden_channels > 0 or self.residual_blocks < 0:
            raise ValueError(
                f"hidden_channels must be positive and residual_blocks non-negative, got "
                f"{self.hidden_channels!r} and {self.residual_blocks!r}"
            )
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"rank must be a positive int, got {self.rank!r}")
        _matexp.check_method(self.expm_method, self.expm_tol, "GlowOptions.expm_tol")
        unroll = self.scan_unroll
        if not isinstance(unroll, bool) and not (isinstance(unroll, int) and unroll >= 1):
            raise ValueError(f"scan_unroll must be True, False or an int >= 1, got {unroll!r}")


def copies_per_iteration(unroll: int | bool, count: int) -> int:
    """``scan_unroll`` as the int a scanning module keeps: ``True`` is every copy.

    Modules keep the int, not the flag: ``True == 1`` in Python, so a kept ``True``
    would make an unrolled model's static structure compare equal to a rolled one's,
    and JAX's and NNX's trace caches would hand one the other's compiled loop.
    """
    if isinstance(unroll, bool):
        return count if unroll else 1
    return unroll
