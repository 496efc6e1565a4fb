"""Product forms: a whole ``jexpm.expm`` timed with each product form, per matrix size.

The products are timed where they are used, in a jitted float ``jexpm.expm`` at 1-norm
2 on a batch of about 65536·36 elements, since XLA fuses them with the polynomial's
linear combinations (isolated products rank the forms differently). Each form is
compiled ahead of time (:func:`expm_in_form`), then all are timed round-robin. The
largest n at which the broadcast form wins is ``broadcast_max_n`` of
``jexpm/_tuning.py`` for the backend the run is on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jexpm import _expm, _products, _tuning

from .harness import Section, markdown_table, median_times, ms, random_with_norm, records

# Total elements of a batch, as in workload (a) of the speed benchmark.
ELEMENTS = 65536 * 36
SIZES = tuple(range(2, 65))
QUICK_SIZES = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def expm_in_form(form: str, a: jax.Array):
    """``jexpm.expm`` compiled for ``a`` with every product in form ``form``.

    The form is the private static option of jexpm's computation, so each form is
    its own compiled function.
    """
    options = dict(upper_triangular=False, max_squarings=None, tol=None, method="opt15")
    return _expm._expm.lower(a, **options, return_info=False, product_form=form).compile()


def run(sizes: Sequence[int], dtypes: Sequence[str], repeats: int, seed: int) -> Section:
    """Times of a whole ``jexpm.expm`` with each product form, fastest per n.

    Args:
      sizes: matrix sizes n.
      dtypes: dtypes to run.
      repeats: timed calls per form.
      seed: random seed.

    Returns:
      A table per dtype and the largest n at which each form was fastest.
    """
    from tqdm import tqdm

    forms = list(_products.FORMS)
    headers = ["n", "batch", *(f"{f} ms" for f in forms), "fastest", "used"]
    tuning = _tuning.for_backend()
    bar = tqdm(total=len(sizes) * len(dtypes), desc="products", unit="size")
    tables, data = [], {}
    for dtype in dtypes:
        rows, largest = [], {}
        itemsize = np.dtype(dtype).itemsize
        for n in sizes:
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
            f"{tuning.broadcast_max_n.get(itemsize, 0)}, dot otherwise."
        )
        data[dtype] = {"rows": records(headers, rows), "largest_fastest": largest}
    bar.close()
    return Section("\n\n".join(tables), data)
