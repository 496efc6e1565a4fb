"""Low precision: bfloat16 and float16 beside float32, time and error of jexpm and torch.

Each input is a batch of :data:`BATCH` random matrices rounded to the dtype; errors
are against ``scipy.linalg.expm`` in float64 on the rounded input. A torch call that
raises is reported as "error".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jexpm

from . import harness, torch_adapter

DTYPES = ("float32", "bfloat16", "float16")
SIZES, QUICK_SIZES = (16, 32, 64), (32,)
NORMS, QUICK_NORMS = (0.5, 2.0, 8.0), (2.0,)
BATCH = 64
HEADERS = ["batch", "‖A‖₁", "dtype", "jexpm ms", "err jexpm", "torch ms", "err torch"]


def run(sizes: Sequence[int], norms: Sequence[float], repeats: int, seed: int) -> harness.Section:
    """bfloat16 / float16 beside float32: time and error of jexpm and torch.

    Args:
      sizes: matrix sizes n.
      norms: 1-norms of the members.
      repeats: timed calls per method.
      seed: random seed.

    Returns:
      One table.
    """
    import scipy.linalg
    from tqdm import tqdm

    expm = jax.jit(jexpm.expm)
    rows = []
    cases = [(n, norm, d) for n in sizes for norm in norms for d in DTYPES]
    for n, norm, dtype in tqdm(cases, desc="low precision", unit="case"):
        x32 = harness.random_with_norm(
            np.random.default_rng([seed, n]), (BATCH, n, n), norm, "float32"
        )
        x = jnp.asarray(x32).astype(dtype)
        rounded = np.asarray(x.astype(jnp.float32), np.float64)
        ref = np.stack([scipy.linalg.expm(m) for m in rounded])
        calls = {"jexpm": (functools.partial(expm, x), jax.block_until_ready)}
        results: dict[str, tuple[float | None, Any]] = dict(harness.median_times(calls, repeats))
        torch_call = torch_adapter.matrix_exp_call(rounded.astype(np.float32), dtype=dtype)
        torch_failed = False
        if torch_call is not None:
            try:
                results |= harness.median_times({"torch": torch_call}, repeats)
            except RuntimeError:
                torch_failed = True
        cells = []
        for name in ("jexpm", "torch"):
            t, out = results.get(name, (None, None))
            err = None if out is None else harness.rel_err(torch_adapter.to_numpy(out), ref)
            cells += [harness.ms(t), harness.fmt(err, ".1e")]
        if torch_failed:
            cells[2:] = ["error", "error"]
        rows.append([f"{BATCH}×{n}×{n}", f"{norm:g}", dtype, *cells])
    return harness.Section(
        "### Low precision (median ms per call; error vs float64 on the rounded input)\n\n"
        + harness.markdown_table(HEADERS, rows),
        harness.records(HEADERS, rows),
    )
