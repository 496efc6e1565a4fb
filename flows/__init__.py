"""Flax NNX layers built on jexpm.

Matrix-exponential normalizing flows and orthogonal fine-tuning.
"""

from ._oft import OrthogonalLinear as OrthogonalLinear

__all__ = ["OrthogonalLinear"]
