"""``python -m benchmarks.device --out DIR``: the whole accelerator run, in one command.

Made for a lent GPU (an NVIDIA H100 or H200) where nothing can be installed and the
project travels as a working tree: ``PYTHONPATH=. python -m benchmarks.device --out
DIR``. It writes ``DIR/device-<backend>.md`` and ``.json`` under the harness's header,
which names the machine and the GPU, with six sections, each reusing a suite:

* expm (:mod:`benchmarks.expm_speed`): workloads (a)-(f) in float32 and bfloat16,
  against ``jax.scipy.linalg.expm`` and ``torch.linalg.matrix_exp`` (on ``cuda`` where
  torch sees the GPU);
* gradients (:mod:`benchmarks.expm_grad`): forward, ``jax.grad`` and ``jax.jvp``,
  jexpm against jax.scipy;
* paths (:mod:`benchmarks.gpu_paths`): forward, ``grad`` and ``jvp`` of the fused
  kernels, the XLA path and the XLA path with command buffers against the floor (a
  copy of the input), with each program's host round trips;
* product forms and cache slicing (:mod:`benchmarks.product_forms`): the fastest
  product form per n and whether slicing large batches for cache pays on this
  backend, the two choices of ``jexpm/_tuning.py``;
* Glow (:mod:`benchmarks.glow_speed`): training step and sampling latency at the
  CIFAR-10 and ImageNet 64x64 shapes for each exponential and the I + A stand-in, one
  process per row. Each row pays a CUDA start and its compile, so within this budget
  only a few fit: the whole Glow table, the paper's networks and the authors' PyTorch
  Glow beside it are ``python -m benchmarks.paper_gpu --out DIR``
  (:mod:`benchmarks.paper_gpu`), all rows in one process.

The run keeps to a time budget (``--budget``, 420 s by default, so that it ends
within 8 minutes with JAX's start-up and the report): each section has a share, time
a section leaves unused passes to the next, and a section out of time skips what is
left and names it in the report. A section that fails is reported with its error and
the others still run. Only JAX and NumPy are required; torch, SciPy (the error
columns' reference) and tqdm are used where installed. JAX is told not to preallocate
GPU memory, so that torch and the Glow worker processes share the device.

``--sections`` runs some of the sections (the budget shared among them in proportion
to their shares) and ``--glow-methods`` some of the Glow rows: a second call for what a
first one's budget left out.

``--smoke`` runs every section on tiny inputs (its numbers mean nothing), to check the
program on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .harness import Section

#: Section -> its share of the time budget, in seconds of the default 420 s budget.
SHARES = {
    "expm": 120.0,
    "gradients": 40.0,
    "paths": 70.0,
    "products": 30.0,
    "slicing": 20.0,
    "glow": 140.0,
}
DEFAULT_BUDGET = 420.0
#: An in-process section still running this long after its deadline is stopped.
GRACE_SECONDS = 30.0


class OutOfTime(Exception):
    """A section ran past its deadline and the grace after it."""


@contextlib.contextmanager
def alarm(deadline: float) -> Iterator[None]:
    """Raise :class:`OutOfTime` in this thread at ``deadline`` (perf_counter), if POSIX."""
    if not hasattr(signal, "setitimer"):  # pragma: no cover - not POSIX
        yield
        return

    def stop(signum, frame):
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, deadline - time.perf_counter()))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded(title: str, make: Callable[[], Section], deadline: float | None) -> Section:
    """``make()``, or a section saying why it has no results.

    Args:
      title: the section's name in the report.
      make: builds the section; it should itself stop starting work at ``deadline``.
      deadline: a ``time.perf_counter()``; ``make`` is stopped :data:`GRACE_SECONDS`
        after it (None: never).

    Returns:
      The section, or one with a "### title" heading and the failure.
    """
    try:
        if deadline is None:
            return make()
        with alarm(deadline + GRACE_SECONDS):
            return make()
    except OutOfTime:
        why = f"stopped {GRACE_SECONDS:.0f} s after its time budget ran out"
    except Exception as e:  # one section's failure must not end the run
        why = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return Section(f"### {title}\n\n{why}.", {"error": why})


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of a run: the full device run or the ``--smoke`` check."""

    workloads: tuple  # expm_speed.Workload
    dtypes: tuple[str, ...]
    norms: tuple[float, ...]
    grad_cases: tuple  # (expm_speed.Workload, norm)
    path_cases: tuple  # (expm_speed.Workload, norm)
    product_sizes: tuple[int, ...]
    slicing_shapes: tuple[tuple[int, int], ...]
    chunk_bytes: int
    glow_shapes: tuple  # glow_speed.Shape
    repeats: int


def plan(smoke: bool, gpu: bool) -> Plan:
    """The full run (workloads (a)-(f), both Glow shapes) or the tiny ``--smoke`` one."""
    from . import expm_grad, expm_speed, glow_speed, gpu_paths, product_forms

    if smoke:
        tiny = expm_speed.Workload("a", (16,), 4)
        return Plan(
            workloads=(tiny,),
            dtypes=("float32", "bfloat16"),
            norms=(2.0,),
            grad_cases=((tiny, 2.0),),
            path_cases=((tiny, 2.0),),
            product_sizes=(4,),
            slicing_shapes=((64, 4),),
            chunk_bytes=16 * 4 * 4 * 4,  # 16 float32 4x4 members a slice: 4 slices
            glow_shapes=(glow_speed.TINY,),
            repeats=1,
        )
    workloads = expm_speed.WORKLOADS
    return Plan(
        workloads=tuple(workloads.values()),
        dtypes=("float32", "bfloat16"),
        norms=expm_speed.NORMS,
        grad_cases=tuple((workloads[k], norm) for k, norm in expm_grad.CASES),
        path_cases=tuple((workloads[k], norm) for k, norm in gpu_paths.CASES),
        product_sizes=product_forms.QUICK_SIZES,
        slicing_shapes=product_forms.SLICING_SHAPES,
        chunk_bytes=product_forms.CPU_CHUNK_BYTES,
        glow_shapes=tuple(glow_speed.shapes(gpu, quick=False)),
        repeats=5,
    )


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.device",
        description="The accelerator run in one command: expm (a)-(f) in float32 and "
        "bfloat16 with gradients against jax.scipy and torch, the product-form and "
        "slicing choices, and the Glow training step and sampling, within a time budget.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the program")
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help="seconds for all sections together (default %(default)s), shared as "
        + ", ".join(f"{k} {v:g}" for k, v in SHARES.items()),
    )
    parser.add_argument(
        "--net",
        choices=("small", "paper"),
        default="small",
        help="Glow coupling networks: 32 channels/1 block (default, to fit the budget) or "
        "the paper's 128/8",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SHARES),
        help="comma-separated sections to run (default all: %(default)s); the budget is "
        "shared among them in proportion to their shares",
    )
    parser.add_argument(
        "--glow-methods",
        default=None,
        help="comma-separated Glow rows to measure (default all); the others are reported "
        "as not run",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error("--budget must be positive")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SHARES))
    if unknown or not args.sections:
        parser.error(f"--sections: choose from {', '.join(SHARES)} (got {unknown or 'none'})")
    if args.glow_methods is not None:
        from .glow_speed import parse_rows

        try:
            args.glow_methods = parse_rows(args.glow_methods)
        except ValueError as error:
            parser.error(f"--glow-methods: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """The accelerator run: every section in turn, each by its deadline, then the report.

    Args:
      argv: the options (``--help``), as in ``sys.argv[1:]``, which is the default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    # Before JAX starts: torch and the Glow workers share the GPU with this process.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    start = time.perf_counter()

    import jax

    from . import expm_grad, expm_speed, glow_speed, gpu_paths, product_forms, torch_adapter
    from .harness import finish, progress

    backend = jax.default_backend()
    torch_adapter.set_threads(os.cpu_count() or 1)
    p = plan(args.smoke, backend == "gpu")
    chosen = {name: share for name, share in SHARES.items() if name in args.sections}
    scale = args.budget / sum(chosen.values())
    deadlines, total = {}, start
    for name, share in chosen.items():
        total += share * scale
        deadlines[name] = total

    def glow() -> Section:
        shapes = p.glow_shapes
        with progress(total=len(shapes) * len(glow_speed.ROWS), desc="glow") as bar:
            section = glow_speed.run(
                shapes,
                args.net,
                p.repeats,
                None,
                backend,
                bar,
                deadline=deadlines["glow"],
                methods=args.glow_methods,
            )
        return dataclasses.replace(
            section,
            markdown=f"### Glow training and sampling ({args.net} coupling networks)\n\n"
            + section.markdown,
        )

    steps: dict[str, tuple[str, Callable[[], Section]]] = {
        "expm": (
            "expm",
            lambda: expm_speed.run(
                p.workloads, p.dtypes, p.norms, p.repeats, args.seed, deadlines["expm"]
            ),
        ),
        "gradients": (
            "Gradients",
            lambda: expm_grad.run(p.grad_cases, p.repeats, args.seed, deadlines["gradients"]),
        ),
        "paths": (
            "expm's paths",
            lambda: gpu_paths.run(p.path_cases, p.repeats, args.seed, deadlines["paths"]),
        ),
        "products": (
            "Product forms inside expm",
            lambda: product_forms.run(
                p.product_sizes, ("float32",), p.repeats, args.seed, deadlines["products"]
            ),
        ),
        "slicing": (
            "Cache slicing of the forward pass",
            lambda: product_forms.slicing(
                p.slicing_shapes,
                "float32",
                p.repeats,
                args.seed,
                p.chunk_bytes,
                deadlines["slicing"],
            ),
        ),
    }
    sections: dict[str, Section] = {}
    used: dict[str, float] = {}
    for name, (title, make) in steps.items():
        if name not in chosen:
            continue
        t0 = time.perf_counter()
        sections[name] = guarded(title, make, deadlines[name])
        used[name] = time.perf_counter() - t0
    if "glow" in chosen:
        # The Glow workers end by their own limits (at most the time left): no alarm.
        t0 = time.perf_counter()
        sections["glow"] = guarded("Glow training and sampling", glow, None)
        used["glow"] = time.perf_counter() - t0
    rows = [
        f"- {name}: {used[name]:.0f} s (deadline at {deadlines[name] - start:.0f} s)"
        for name in chosen
    ]
    sections["budget"] = Section(
        f"### Time per section (budget {args.budget:g} s)\n\n" + "\n".join(rows),
        {"budget_s": args.budget, "used_s": used},
    )
    out = args.out / f"device-{backend}{'-smoke' if args.smoke else ''}.md"
    finish(out, "jexpm on the device", "benchmarks.device", argv, sections, start)


if __name__ == "__main__":
    main()
