"""Backend tuning: the measured constants behind the product form and batch slicing.

Each value was measured on one machine and backend (docs/design.md, "Backend tuning");
the comment beside it names the command that regenerates the measurement. A backend
without an entry of its own uses :data:`ACCELERATOR`. No accelerator has been measured
yet: its values are the choices that need no measurement (products through ``dot``, no
slicing for cache), and the same commands, run on the accelerator, give its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The tuning constants of one backend.

    Attributes:
      broadcast_max_n: item size in bytes -> the largest n for which a product of
        n x n matrices is written as a broadcast multiply-and-sum instead of ``dot``
        (``jexpm/_products.py``); a missing item size always uses ``dot``.
      cache_chunk_bytes: bytes per matrix array of one slice of a large batch in the
        forward pass, so that the polynomial's intermediates stay in cache; 0: the
        forward pass is not sliced for cache.
      memory_chunks: the least number of slices of the Fréchet derivative (the
        backward pass), which shrinks its working set accordingly.
      memory_chunk_min_batch: batches smaller than this are not sliced for memory.
    """

    broadcast_max_n: Mapping[int, int]
    cache_chunk_bytes: int
    memory_chunks: int
    memory_chunk_min_batch: int


CPU = Tuning(
    # python -m benchmarks.products: float32 up to n = 7 (n = 8 ties; 16384 12x12: dot
    # 21 ms, broadcast 49 ms), float64 up to n = 11 (2 cores, jax 0.10.2).
    broadcast_max_n={4: 8, 8: 11, 16: 11},
    # python -m benchmarks.expm --workloads a,b,c --norms 2 --dtype float32 --no-grad,
    # once with each value: 65536x6x6 32 -> 10 ms, 16384x12x12 60 -> 23 ms,
    # 4096x24x24 32 -> 10 ms against no slicing.
    cache_chunk_bytes=1 << 20,
    # python -m benchmarks.expm --workloads d --norms 30 --dtype float32 (the gradient
    # table's temp/input): (64, 48, 48) float32 scratch memory 13x -> 3.5x the input,
    # time unchanged.
    memory_chunks=4,
    memory_chunk_min_batch=8,
)

ACCELERATOR = Tuning(
    broadcast_max_n={},
    cache_chunk_bytes=0,
    # The memory argument holds on any backend; the CPU's measurement stands in until
    # the command above is run on an accelerator.
    memory_chunks=CPU.memory_chunks,
    memory_chunk_min_batch=CPU.memory_chunk_min_batch,
)

#: Backend name (``jax.default_backend()``) -> its tuning.
TUNING: Mapping[str, Tuning] = {"cpu": CPU, "gpu": ACCELERATOR, "tpu": ACCELERATOR}


def for_backend(backend: str | None = None) -> Tuning:
    """The tuning of ``backend`` (default: JAX's default backend)."""
    return TUNING.get(backend or jax.default_backend(), ACCELERATOR)
