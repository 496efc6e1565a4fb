"""Product forms and slicing: a whole ``jexpm.expm`` timed each way, per matrix size.

The products are timed where they are used, in a jitted float ``jexpm.expm`` at 1-norm
2 on a batch of about 65536·36 elements, since XLA fuses them with the polynomial's
linear combinations (isolated products rank the forms differently). Each form is
compiled ahead of time (:func:`expm_in_form`), then all are timed round-robin. The
largest n at which the broadcast form wins is ``broadcast_max_n`` of
``jexpm/_tuning.py`` for the backend the run is on.

:func:`slicing` times the forward computation with and without the cache slicing of
large batches (``cache_chunk_bytes`` of ``jexpm/_tuning.py``), each way passed to the
slicing as an explicit tuning, so that the library's own choice is left as it is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jexpm import _approximants, _batching, _expm, _options, _products, _tuning

from .harness import (
    Section,
    markdown_table,
    median_times,
    ms,
    past,
    progress,
    random_with_norm,
    records,
    skipped_note,
)

# Total elements of a batch, as in workload (a) of the speed benchmark.
ELEMENTS = 65536 * 36
SIZES = tuple(range(2, 65))
QUICK_SIZES = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: (batch, n) of the slicing comparison: workloads (a)-(d) of the speed benchmark.
SLICING_SHAPES = ((65536, 6), (16384, 12), (4096, 24), (64, 48))
#: Bytes per matrix array of a slice in the sliced variant: the CPU's measured value.
CPU_CHUNK_BYTES = _tuning.CPU.cache_chunk_bytes


def expm_in_form(form: str, a: jax.Array):
    """``jexpm.expm`` compiled for ``a`` with every product in form ``form``.

    The form is the private static option of jexpm's computation, so each form is
    its own compiled function.
    """
    options = dict(upper_triangular=None, max_squarings=None, tol=None, method="opt15")
    return _expm._expm.lower(a, **options, return_info=False, product_form=form).compile()


def run(
    sizes: Sequence[int],
    dtypes: Sequence[str],
    repeats: int,
    seed: int,
    deadline: float | None = None,
) -> Section:
    """Times of a whole ``jexpm.expm`` with each product form, fastest per n.

    Args:
      sizes: matrix sizes n.
      dtypes: dtypes to run.
      repeats: timed calls per form.
      seed: random seed.
      deadline: a ``time.perf_counter()`` after which the remaining sizes are
        skipped (and named under the table); None: no limit.

    Returns:
      A table per dtype and the largest n at which each form was fastest.
    """
    forms = list(_products.FORMS)
    headers = ["n", "batch", *(f"{f} ms" for f in forms), "fastest", "used"]
    tuning = _tuning.for_backend()
    bar = progress(total=len(sizes) * len(dtypes), desc="products", unit="size")
    tables, data = [], {}
    for dtype in dtypes:
        rows, largest, skipped = [], {}, []
        itemsize = np.dtype(dtype).itemsize
        for n in sizes:
            if past(deadline):
                skipped.append(f"n={n}")
                continue
            bar.set_postfix_str(f"{dtype} n={n}")
            batch = max(1, round(ELEMENTS / n**2))
            rng = np.random.default_rng([seed, n])
            a = jnp.asarray(random_with_norm(rng, (batch, n, n), 2.0, dtype))
            calls = {
                f: (functools.partial(expm_in_form(f, a), a), jax.block_until_ready) for f in forms
            }
            times = {f: t for f, (t, _) in median_times(calls, repeats).items()}
            fastest = min(times, key=times.__getitem__)
            largest[fastest] = n
            used = _products.formulation(n, itemsize)
            rows.append([n, batch, *(ms(times[f]) for f in forms), fastest, used])
            bar.update()
        summary = ", ".join(f"{f} up to n={m}" for f, m in largest.items())
        tables.append(
            f"### Product forms inside expm, {dtype} (median ms per expm call)\n\n"
            f"{markdown_table(headers, rows)}\n\nLargest n at which each form was fastest: "
            f"{summary}. Current rule on the {jax.default_backend()}: broadcast for n ≤ "
            f"{tuning.broadcast_max_n.get(itemsize, 0)}, dot otherwise.{skipped_note(skipped)}"
        )
        data[dtype] = {"rows": records(headers, rows), "largest_fastest": largest}
    bar.close()
    return Section("\n\n".join(tables), data)


def forward_with_tuning(tuning: _tuning.Tuning, a: jax.Array):
    """The forward computation of ``jexpm.expm`` (opt15), sliced as ``tuning`` says.

    Compiled for ``a``; it returns (result, path, products) as the library's forward
    pass does, with the product forms of the backend it runs on.
    """
    approximant = _approximants.approximant("opt15", "exp")
    compute = functools.partial(
        approximant.compute, tol=_options.tolerance(None, a.dtype), upper_triangular=None
    )
    return jax.jit(lambda x: _batching.in_chunks(compute, x, tuning=tuning)).lower(a).compile()


def slicing(
    shapes: Sequence[tuple[int, int]],
    dtype: str,
    repeats: int,
    seed: int,
    chunk_bytes: int = CPU_CHUNK_BYTES,
    deadline: float | None = None,
) -> Section:
    """The forward pass of expm with and without cache slicing, per (batch, n).

    Args:
      shapes: (batch, n) pairs.
      dtype: the input dtype.
      repeats: timed calls per variant.
      seed: random seed.
      chunk_bytes: bytes per matrix array of a slice in the sliced variant (the
        CPU's measured value by default).
      deadline: a ``time.perf_counter()`` after which the remaining shapes are
        skipped (and named under the table); None: no limit.

    Returns:
      One table: both times, the faster and the backend's current rule.
    """
    base = _tuning.for_backend()
    tunings = {
        "sliced": dataclasses.replace(base, cache_chunk_bytes=chunk_bytes),
        "unsliced": dataclasses.replace(base, cache_chunk_bytes=0),
    }
    current = "sliced" if base.cache_chunk_bytes else "unsliced"
    headers = ["batch", "n", "slices", "sliced ms", "unsliced ms", "faster", "used"]
    rows, skipped = [], []
    for batch, n in progress(shapes, desc="slicing", unit="shape"):
        if past(deadline):
            skipped.append(f"{batch}×{n}×{n}")
            continue
        rng = np.random.default_rng([seed, n])
        a = jnp.asarray(random_with_norm(rng, (batch, n, n), 2.0, dtype))
        calls = {
            name: (functools.partial(forward_with_tuning(t, a), a), jax.block_until_ready)
            for name, t in tunings.items()
        }
        times = {name: t for name, (t, _) in median_times(calls, repeats).items()}
        slices = _batching.chunk_count(a, (batch,), False, tunings["sliced"])
        faster = min(times, key=times.__getitem__)
        rows.append([batch, n, slices, ms(times["sliced"]), ms(times["unsliced"]), faster, current])
    return Section(
        f"### Cache slicing of the forward pass, {dtype} (median ms per expm call; "
        f"sliced: {chunk_bytes} bytes per matrix array of a slice)\n\n"
        f"{markdown_table(headers, rows)}{skipped_note(skipped)}",
        {"chunk_bytes": chunk_bytes, "rows": records(headers, rows), "skipped": skipped},
    )
