"""``python -m benchmarks.flows``: the flow papers' experiments on the machine at hand.

Xiao & Liu (2020) and the Taylor 15+ paper report faster Glow training and sampling
with a better matrix exponential. This program measures, in one run on one machine:

1. the training step and sampling latency of the Glow per exponential
   (:mod:`benchmarks.glow_speed`);
2. the (m, s) distribution used while training (:mod:`benchmarks.training_ms`);
3. products and accuracy on a fixed matrix set (:mod:`benchmarks.accuracy`).

``--quick`` runs the CIFAR-10 shape only, with fewer repeats and training steps;
``--smoke`` runs every section on tiny shapes (minutes, mostly compiling), to check the program
(its numbers mean nothing). Tables go to stdout and, under a header naming the machine,
to ``benchmarks/results/flows-<backend>.md`` (and ``.json``) with the PNG figures
beside it. The documentation site includes that file as it is (``docs/results/glow.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import accuracy, glow_speed, training_ms
from .harness import RESULTS, default_output, finish


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flows",
        description="Glow training-step and sampling speed per matrix exponential, the "
        "(m, s) used in training, and products/accuracy on a fixed matrix set.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CIFAR shape only, fewer repeats")
    mode.add_argument("--smoke", action="store_true", help="tiny shapes, to check the program only")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5)")
    parser.add_argument(
        "--net",
        choices=("small", "paper"),
        default=None,
        help="coupling networks: 32 channels/1 block, or the paper's 128/8 (default: "
        "paper on a GPU, small otherwise)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="most seconds per method and shape (default: no cap beyond the per-method "
        "limit, the larger of 300 s and 3x the slowest method so far)",
    )
    parser.add_argument("--train-steps", type=int, default=None, help="for the (m, s) run")
    parser.add_argument("--out", type=Path, default=None, help="markdown output file")
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated rows of the Glow table to run (default all: "
        + ", ".join(glow_speed.ROWS)
        + ")",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``).

    Args:
      argv: command-line arguments without the program name; default ``sys.argv[1:]``.
    """
    import jax
    from tqdm import tqdm

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    backend = jax.default_backend()
    gpu = backend == "gpu"
    net = args.net or ("paper" if gpu else "small")
    short = args.quick or args.smoke
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)
    train_steps = args.train_steps or (4 if args.smoke else 60 if args.quick else 100)
    if args.smoke:
        out = args.out or RESULTS / f"flows-{backend}-smoke.md"
        shape_list = [glow_speed.TINY]
    else:
        out = args.out or default_output("flows", args.quick)
        shape_list = glow_speed.shapes(gpu, args.quick)
    stem = out.with_suffix("")
    start = time.perf_counter()
    with tqdm(total=len(shape_list) * len(glow_speed.ROWS) + 2, desc="benchmarks.flows") as bar:
        methods = None if args.methods is None else [m.strip() for m in args.methods.split(",")]
        speed = glow_speed.run(
            shape_list, net, repeats, args.timeout, backend, bar, methods=methods
        )
        bar.set_postfix_str("(m, s) training run")
        stats = training_ms.run(train_steps, Path(f"{stem}-ms.png"))
        bar.update()
        bar.set_postfix_str("products and accuracy")
        acc = accuracy.run(Path(f"{stem}-accuracy.png"), count=8 if short else 64)
        bar.update()
    net_note = (
        "coupling networks as in the paper (128 channels, 8 residual blocks)"
        if net == "paper"
        else "coupling networks shrunk to 32 channels and 1 residual block (the flow's "
        "levels, steps and matrix sizes are the paper's)"
    )
    speed = dataclasses.replace(
        speed, markdown=f"### Glow training and sampling ({net_note})\n\n{speed.markdown}"
    )
    stats = dataclasses.replace(
        stats, markdown=f"### Taylor order and squarings used in training\n\n{stats.markdown}"
    )
    acc = dataclasses.replace(acc, markdown=f"### Products and accuracy\n\n{acc.markdown}")
    sections = {"glow": speed, "training_ms": stats, "accuracy": acc}
    finish(out, "benchmarks.flows", "benchmarks.flows", argv, sections, start)


if __name__ == "__main__":
    main()
