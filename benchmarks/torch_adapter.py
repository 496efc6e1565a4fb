"""torch.linalg.matrix_exp as an optional contender: None wherever torch is missing."""

from __future__ import annotations

from typing import Any

import numpy as np

from .harness import Call

try:  # optional competitor
    import torch  # pyright: ignore[reportMissingImports]
except ImportError:  # pragma: no cover - depends on the environment
    torch = None


def available() -> bool:
    """Whether torch is installed."""
    return torch is not None


def describe() -> str:
    """Torch's version, device and threads for the report header."""
    if torch is None:
        return "not installed"
    return f"{torch.__version__} ({device()}, {torch.get_num_threads()} threads)"


def set_threads(threads: int) -> None:
    """``torch.set_num_threads`` (nothing without torch)."""
    if torch is not None:
        torch.set_num_threads(threads)


def device() -> str:
    """The torch device: cuda when JAX runs on a GPU and torch sees one, else cpu."""
    import jax

    if torch is not None and jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _sync(out):
    if torch is not None and device() == "cuda":
        torch.cuda.synchronize()
    return out


def to_numpy(x: Any) -> np.ndarray:
    """A JAX array or a torch tensor as a NumPy array."""
    if torch is not None and isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    return np.asarray(x)


def matrix_exp_call(
    x: np.ndarray, *, looped: bool = False, dtype: str | None = None
) -> Call | None:
    """A timing call of torch.linalg.matrix_exp on ``x``; None without torch.

    Args:
      x: the input stack (..., n, n); a bfloat16 array (which torch cannot read from
        NumPy) is read as float32 and computed in bfloat16.
      looped: exponentiate the members one at a time (a Python loop over the first axis).
      dtype: compute in this torch dtype (e.g. "bfloat16") and return float32.

    Returns:
      (call, sync) for :func:`benchmarks.harness.median_times`.
    """
    if torch is None:
        return None
    if dtype is None and x.dtype.name == "bfloat16":
        x, dtype = x.astype(np.float32), "bfloat16"
    t = torch.from_numpy(x).to(device())
    matrix_exp, stack = torch.linalg.matrix_exp, torch.stack
    if dtype is not None:
        t = t.to(getattr(torch, dtype))

    def call():
        out = stack([matrix_exp(m) for m in t]) if looped else matrix_exp(t)
        return out if dtype is None else out.float()

    return call, _sync
