"""Backend tuning: the measured constants behind the product form and batch slicing.

Each value was measured on one machine and backend (docs/design.md, "Backend tuning");
the comment beside it names the command that regenerates the measurement. The GPU's
values were measured on one NVIDIA H200 (docs/design.md, same section). A
backend without an entry of its own (a TPU) uses :data:`ACCELERATOR`, the choices that
need no measurement (products through ``dot``, no slicing for cache); the same
commands, run on that backend, give its own.
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
      sort_min_batch: batches of at least this many members are ordered by their
        members' norms (the derivative: by their orders and squarings) and each
        member is evaluated at its own order (``jexpm/_derivatives.py``); 0: never.
      sort_slices: the least number of slices of an ordered batch.
      kernel_max_n: the largest n whose ``expm`` and derivatives run in the fused
        kernels of ``jexpm/_kernel.py`` (GPUs only); 0: never.
    """

    broadcast_max_n: Mapping[int, int]
    cache_chunk_bytes: int
    memory_chunks: int
    memory_chunk_min_batch: int
    sort_min_batch: int
    sort_slices: int
    kernel_max_n: int = 0

    def __hash__(self) -> int:
        # Hashed by value (the mapping as sorted pairs), so that approximants carrying
        # equal tunings are one cached object (_approximants.approximant).
        fields = dataclasses.astuple(self)
        return hash((tuple(sorted(self.broadcast_max_n.items())), *fields[1:]))


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
    # python -m benchmarks.member_orders (float32, shared order -> per member, expm and
    # grad ms; 2 cores, loaded): mixed norms 65536x6x6 56.8 -> 52.5, 197 -> 178;
    # 16384x12x12 73.3 -> 55.7, 155 -> 156; 4096x24x24 43.9 -> 40.9, 124 -> 119 (20%
    # fewer products); but one norm (2) 65536x6x6 36.4 -> 40.4, 184 -> 202; 4096x24x24
    # 39 -> 49.1, 132 -> 164; and a default Glow's couplings after 20 steps (norms
    # 0.02-0.1, orders already alike) 8192x6x6 3.05 -> 3.99, 512x24x24 4.69 -> 8.96.
    # Off: flows' batches lose. 256 and 8 are the values measured.
    sort_min_batch=0,
    sort_slices=8,
)

ACCELERATOR = Tuning(
    broadcast_max_n={},
    cache_chunk_bytes=0,
    # The memory argument holds on any backend; the CPU's measurement stands in until
    # the command above is run on an accelerator.
    memory_chunks=CPU.memory_chunks,
    memory_chunk_min_batch=CPU.memory_chunk_min_batch,
    # Not measured on an accelerator: batches share the highest order.
    sort_min_batch=0,
    sort_slices=1,
)

GPU = dataclasses.replace(
    ACCELERATOR,
    # PYTHONPATH=. python -m benchmarks.device --sections products (NVIDIA H200, jax
    # 0.11.2, float32, ms per expm call, dot -> broadcast): n = 2 0.47 -> 0.33, 4 0.84 ->
    # 0.32, 6 0.34 -> 0.32, 8 0.90 -> 0.55, 12 0.82 -> 0.77, 16 0.47 -> 0.38; larger n
    # and other dtypes not measured yet (they keep dot). One fused kernel per product
    # against a batched GEMM call: at these sizes the launches, not the flops, decide.
    broadcast_max_n={4: 16},
    # Same run, --sections slicing (sliced at 1 MiB -> unsliced, ms): 65536x6x6 1.52 ->
    # 0.54, 16384x12x12 1.66 -> 0.62, 4096x24x24 1.98 -> 0.80: no slicing for cache.
    cache_chunk_bytes=0,
    # Not measured yet (no GPU run since the kernels landed): the size up to which the
    # kernels' programs stay small to trace; benchmarks.device --sections kernel times
    # the kernels against the XLA path per n.
    kernel_max_n=32,
)

#: Backend name (``jax.default_backend()``) -> its tuning.
TUNING: Mapping[str, Tuning] = {"cpu": CPU, "gpu": GPU, "tpu": ACCELERATOR}


def for_backend(backend: str | None = None) -> Tuning:
    """The tuning of ``backend`` (default: JAX's default backend)."""
    return TUNING.get(backend or jax.default_backend(), ACCELERATOR)
