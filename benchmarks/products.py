"""``python -m benchmarks.products``: which product form is fastest, per matrix size.

Times a whole ``jexpm.expm`` with each product form for n = 2..64
(:mod:`benchmarks.product_forms`); its result is the ``broadcast_max_n`` of
``jexpm/_tuning.py`` for the backend it runs on. ``--quick`` times ten sizes with 3
repeats. The report goes to ``benchmarks/results/products-<backend>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import product_forms
from .harness import default_output, finish


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``).

    Args:
      argv: command-line arguments without the program name; default ``sys.argv[1:]``.
    """
    import jax

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.products",
        description="Time jexpm.expm with each product form of jexpm._products per size n.",
    )
    parser.add_argument("--quick", action="store_true", help="ten sizes, 3 repeats")
    parser.add_argument(
        "--dtype", choices=("float32", "float64", "both"), default="both", help="default both"
    )
    parser.add_argument(
        "--sizes", help="comma-separated matrix sizes (default 2..64; --quick: ten of them)"
    )
    parser.add_argument("--out", type=Path, help="markdown output file")
    parser.add_argument("--repeats", type=int, help="timed calls per form (default 7)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
    else:
        sizes = product_forms.QUICK_SIZES if args.quick else product_forms.SIZES
    repeats = args.repeats or (3 if args.quick else 7)
    start = time.perf_counter()
    sections = {"products": product_forms.run(sizes, dtypes, repeats, args.seed)}
    out = args.out or default_output("products", args.quick)
    finish(out, "jexpm product forms", "benchmarks.products", argv, sections, start)


if __name__ == "__main__":
    main()
