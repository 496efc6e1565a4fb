"""``python -m benchmarks.expm``: jexpm's speed, gradients and low precision.

Three sections (``--help`` for the options):

* speed (:mod:`benchmarks.expm_speed`): every method on workloads (a)-(f) in float32
  and float64 at three 1-norms;
* gradients (:mod:`benchmarks.expm_grad`): reverse and forward mode against the
  forward pass, time and compiled scratch memory, jexpm against jax.scipy;
* low precision (:mod:`benchmarks.low_precision`): bfloat16 and float16 beside
  float32, jexpm and torch.

``--quick`` runs a small subset with 3 repeats (a smoke test, a few minutes on two
cores). Compare numbers within one run: machines are noisy, and on a loaded machine
multithreaded LAPACK (inside jax.scipy) and OpenMP (torch) calls show occasional
10-1000x outliers. The report goes to ``benchmarks/results/expm-<backend>.md`` (and
``.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import expm_grad, expm_speed, low_precision, torch_adapter
from .harness import default_output, finish


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    workloads = expm_speed.WORKLOADS
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.expm",
        description=(
            "Benchmark jexpm.expm (opt15, ps, baseline, vmap) against "
            "jax.scipy.linalg.expm and torch.linalg.matrix_exp. Workloads: "
            + "; ".join(w.label for w in workloads.values())
            + "."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small subset (workloads {','.join(expm_speed.QUICK_WORKLOADS)}, norms "
        f"{','.join(map(str, expm_speed.QUICK_NORMS))}, one gradient case) with 3 repeats",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64", "both"),
        default="both",
        help="dtypes of the speed tables (default both); the gradient section is float32",
    )
    parser.add_argument("--out", type=Path, help="markdown output file")
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 7)")
    parser.add_argument(
        "--workloads", help=f"comma-separated subset of {','.join(workloads)} (default all)"
    )
    parser.add_argument(
        "--norms", help=f"comma-separated 1-norms (default {','.join(map(str, expm_speed.NORMS))})"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch.set_num_threads (default: the CPU count, %(default)s)",
    )
    parser.add_argument("--no-grad", action="store_true", help="skip the gradient section")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.workloads is not None:
        keys = [k.strip() for k in args.workloads.split(",") if k.strip()]
        unknown = sorted(set(keys) - set(workloads))
        if unknown or not keys:
            parser.error(f"--workloads: unknown {unknown}; choose from {','.join(workloads)}")
        args.workloads = keys
    if args.norms is not None:
        args.norms = [float(v) for v in args.norms.split(",")]
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``).

    Args:
      argv: command-line arguments without the program name; default ``sys.argv[1:]``.
    """
    import jax

    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse_args(argv)
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)
    torch_adapter.set_threads(args.torch_threads)
    repeats = args.repeats or (3 if args.quick else 7)
    start = time.perf_counter()
    workloads = expm_speed.WORKLOADS
    keys = args.workloads or (expm_speed.QUICK_WORKLOADS if args.quick else tuple(workloads))
    norms = args.norms or (expm_speed.QUICK_NORMS if args.quick else expm_speed.NORMS)
    sections = {
        "speed": expm_speed.run([workloads[k] for k in keys], dtypes, norms, repeats, args.seed)
    }
    grad_cases = [
        (workloads[k], norm)
        for k, norm in (expm_grad.QUICK_CASES if args.quick else expm_grad.CASES)
        if k in keys
    ]
    if grad_cases and not args.no_grad:
        sections["gradients"] = expm_grad.run(grad_cases, repeats, args.seed)
    if not args.workloads:
        sizes = low_precision.QUICK_SIZES if args.quick else low_precision.SIZES
        low_norms = low_precision.QUICK_NORMS if args.quick else low_precision.NORMS
        sections["low_precision"] = low_precision.run(sizes, low_norms, repeats, args.seed)
    out = args.out or default_output("expm", args.quick)
    finish(out, "jexpm benchmarks", "benchmarks.expm", argv, sections, start)


if __name__ == "__main__":
    main()
