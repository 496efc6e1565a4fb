"""Training-step compile and step time: does compile time grow with the number of steps?

``python -m benchmarks.compile_time [--revision REV ...]`` builds the training step of three
Glow configurations and reports, per configuration, the time to initialise the model
(the jitted data-dependent ActNorm pass, compile included), to compile the training
step, and the median step time:

- ``default``: the ``default`` preset (3 levels of 2 steps, 32-channel networks with 1
  residual block, batch 32);
- ``bench CIFAR``: the flow benchmark's CIFAR-10 shape on a CPU (the paper's 3 levels
  of 8/4/2 steps, networks shrunk to 32 channels and 1 residual block, batch 64);
- ``cifar10``: the ``cifar10`` preset (the paper's networks: 128 channels, 8 residual
  blocks, batch 64).

The current tree's step is timed with and without the (m, s) statistics it returns,
and with its scans unrolled (``scan_unroll=True``: compile time then grows with depth).
``--revision REV`` (repeatable) also measures the flows and jexpm packages of a git
revision (e.g. the one before the steps ran under a scan) in the same run, so that the
trees are compared under the same load; ``--rounds`` measures them in turn several
times. Each measurement runs in its own process (:mod:`benchmarks.isolation`).
Results go to ``benchmarks/results/compile-<backend>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import isolation
from .harness import RESULTS, Section, finish, markdown_table

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("default", "bench CIFAR", "cifar10")


def _config(workload: str):
    from flows import configs

    if workload == "default":
        return configs.get_config("default")
    if workload == "bench CIFAR":
        # override: the key=value form every revision's configs take
        return configs.override(
            configs.get_config("cifar10"), ["hidden_channels=32", "residual_blocks=1"]
        )
    if workload == "cifar10":
        return configs.get_config("cifar10")
    raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")


def _step_function(train, graphdef, tx, statistics: bool):
    """The training step of the ``flows.train`` at hand, jitted."""
    import functools

    import jax

    if hasattr(train, "train_step"):
        step = functools.partial(
            train.train_step, graphdef=graphdef, tx=tx, ema_decay=0.999, statistics=statistics
        )
        # Compiled as that revision's training program compiles it.
        options = getattr(train, "compiler_options", dict)()
        return jax.jit(step, donate_argnums=0, compiler_options=options), train.create_train_state
    # Revisions before TrainState: a step factory and a dict state, no statistics.
    return jax.jit(train.make_train_step(graphdef, tx, 0.999), donate_argnums=0), (
        train.initial_state
    )


def worker(spec: dict) -> dict:
    """One measurement in this process: ``spec`` names the workload, statistics, repeats."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import flows
    from flows import configs, train

    config = _config(spec["workload"])
    if spec.get("unroll"):
        config = configs.override(config, ["scan_unroll=True"])
    shape = (32, 32, 3)
    images = np.random.default_rng(0).integers(0, 256, (config.batch_size, *shape), dtype=np.uint8)
    t0 = time.perf_counter()
    model = train.create_model(config, shape, 0)
    model.initialize(train.dequantize_init_batch(jnp.asarray(images), 0))
    init_s = time.perf_counter() - t0
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamax(1e-3)
    step, create_state = _step_function(train, graphdef, tx, spec["statistics"])
    state = create_state(params, tx)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = step.lower(state, images, key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(spec["repeats"] + 1):  # the first call is not timed
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(compiled(state, images, jax.random.fold_in(key, i)))
        times.append(time.perf_counter() - t0)
    return {
        "flows": str(Path(flows.__file__).parent),
        "init_s": init_s,
        "compile_s": compile_s,
        "step_s": statistics.median(times[1:]),
    }


def _measure(tree: Path, spec: dict, limit: float) -> dict:
    """``worker(spec)`` in a child process whose flows and jexpm come from ``tree``."""
    code = (
        "import json, sys; "
        f"sys.path[:0] = [{str(tree)!r}, {str(ROOT)!r}]; "
        "from benchmarks.compile_time import worker; "
        f"print(json.dumps(worker(json.loads({json.dumps(spec)!r}))))"
    )
    result = isolation.run_isolated([sys.executable, "-c", code], limit)
    if "error" not in result and Path(result["flows"]) != tree / "flows":
        result = {"error": f"measured {result['flows']}, not {tree / 'flows'}"}
    result.pop("flows", None)  # a path of this machine, checked above
    return result


def run(
    workloads: Sequence[str],
    revisions: Sequence[str],
    repeats: int,
    limit: float,
    rounds: int = 1,
    variants: bool = True,
) -> Section:
    """Every workload, on the current tree (plain, with statistics, unrolled) and each revision.

    ``rounds`` > 1 runs the whole list that many times over, so that the trees
    alternate under the same load, and reports medians with their range.
    ``variants=False`` leaves out the rows with statistics and unrolled.
    """
    # (statistics, unrolled) of the current tree's rows
    current = [(True, False), (False, False), (False, True)] if variants else [(False, False)]
    runs: list[tuple[str, str, bool, bool]] = []  # tree, workload, statistics, unrolled
    for workload in workloads:
        runs += [("current", workload, stats, unroll) for stats, unroll in current]
        runs += [(revision, workload, False, False) for revision in revisions]
    measured: dict[tuple[str, str, bool, bool], list[dict]] = {run: [] for run in runs}
    data = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"current": ROOT}
        for revision in revisions:
            trees[revision] = Path(tmp) / revision
            trees[revision].mkdir()
            isolation.export_revision(revision, trees[revision])
        for round_ in range(rounds):
            for run_ in runs:
                tree_name, workload, stats, unroll = run_
                reps = max(1, repeats // 3) if workload == "cifar10" else repeats
                spec = dict(workload=workload, statistics=stats, unroll=unroll, repeats=reps)
                print(f"round {round_ + 1}/{rounds}: {tree_name} {spec} ...", file=sys.stderr)
                result = _measure(trees[tree_name], spec, limit)
                data.append({"tree": tree_name, "round": round_, **spec, **result})
                measured[run_].append(result)
    rows = []
    for (tree_name, workload, stats, unroll), results in measured.items():
        label = f"{tree_name}{' + (m, s)' if stats else ''}{', unrolled' if unroll else ''}"
        good = [r for r in results if "error" not in r]
        if not good:
            rows.append([workload, label, results[0]["error"], "", ""])
            continue
        rows.append(
            [
                workload,
                label,
                _summary([r["init_s"] for r in good], "{:.1f}"),
                _summary([r["compile_s"] for r in good], "{:.1f}"),
                _summary([1e3 * r["step_s"] for r in good], "{:.0f}"),
            ]
        )
    table = markdown_table(
        ["workload", "tree", "init s (compile incl.)", "step compile s", "step ms"], rows
    )
    note = (
        f"Training step of the Glow, one process per row, median of {repeats} steps "
        f"({max(1, repeats // 3)} for cifar10) after an untimed one. `+ (m, s)`: the "
        "step also returns the (m, s) statistics of every exponential; `unrolled`: "
        "`scan_unroll=True`, the stacked steps and blocks compiled one by one."
    )
    if rounds > 1:
        note += (
            f" {rounds} rounds, the rows measured in turn within each: median over the"
            " rounds (min–max)."
        )
    return Section(f"{note}\n\n{table}", data)


def _summary(values: list[float], fmt: str) -> str:
    """The median of ``values``, with their range when there are several."""
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line (see the module docstring and ``--help``)."""
    import jax

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_time")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {WORKLOADS}"
    )
    parser.add_argument(
        "--revision", action="append", default=[], help="also measure this git revision"
    )
    parser.add_argument("--repeats", type=int, default=6, help="timed steps (cifar10: a third)")
    parser.add_argument("--limit", type=float, default=1200.0, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=None, help="markdown output file")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every row this many times, in turn"
    )
    parser.add_argument(
        "--no-variants",
        dest="variants",
        action="store_false",
        help="leave out the rows with statistics and unrolled",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        _config(w)  # fail early on a bad name
    out = args.out or RESULTS / f"compile-{jax.default_backend()}.md"
    start = time.perf_counter()
    section = run(workloads, args.revision, args.repeats, args.limit, args.rounds, args.variants)
    finish(
        out, "benchmarks.compile_time", "benchmarks.compile_time", argv, {"compile": section}, start
    )


if __name__ == "__main__":
    main()
