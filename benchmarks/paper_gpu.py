"""``python -m benchmarks.paper_gpu --out DIR``: the paper's Glow experiment on a GPU, one process.

arXiv 2512.20777 reports Glow training 3.91x-9.74x faster and sampling latency about
50% lower on a GPU, against Xiao and Liu's PyTorch Taylor loop, which reads each
term's norm back to the host. This command writes that experiment's table for one
card, within a time budget, as ``DIR/paper-<backend>.md`` and ``.json`` under the
harness's header (which names the machine and the GPU):

* ours, every row of :data:`benchmarks.glow_speed.ROWS` (``baseline``, ``ps``,
  ``opt15``, ``jax.scipy``, ``opt15 + action`` and the I + A stand-in) at the CIFAR-10
  shape (32x32x3, 3 levels of 8/4/2 steps, batch 64), the ImageNet 64x64 shape (4
  levels of 8/4/2/2 steps, batch 8) and its training step at batch 64: the training
  step, the exponential's share of it (step against the stand-in's), sampling latency
  at batch 1, 16 and 128 and every compile time in a column of its own. All rows run
  in this process (:func:`benchmarks.glow_speed.measure`), so the CUDA start and the
  data are paid once; each program is compiled once. A row that runs out of memory
  says so.
* theirs, with ``--torch-glow PATH`` (a checkout of dafaronbi/fast-matrix-exponential,
  which never enters this repository): the same shapes with their ``old`` (Xiao-Liu)
  and ``new`` exponentials, timed by :mod:`benchmarks.torch_glow` in one process of
  its own (their module ``flows`` has our package's name), run first so that the card
  is wholly theirs and then wholly ours.
* the two comparisons, labelled: the paper's (their new against their old loop; ours
  against the eager loop cannot be timed in a jitted step, and the per-call
  comparison is in :mod:`benchmarks.device`'s expm table) and the fair one (our opt15
  against our jitted baseline, and against their new).

The coupling networks are the paper's (128 hidden channels, 8 residual blocks). The
budget (``--budget``, :data:`DEFAULT_BUDGET` s, so that the command ends within 9
minutes) gives :data:`TORCH_SHARE` of it to theirs and the rest, with whatever theirs
left, to ours. Our rows run by priority (:data:`TIERS`: the rows of both comparisons
on every shape first), none starts with under ``MIN_ROW_SECONDS`` left, one running
:data:`benchmarks.device.GRACE_SECONDS` past the budget is stopped (the first row
always runs), and every row left out names why. ``--methods`` measures some of our
rows (a second call for what a first one's budget left out). ``--smoke`` runs it on
:data:`benchmarks.glow_speed.TINY` with the small networks, to check the program on a
CPU; its numbers mean nothing. On a CPU ``jax.scipy`` runs pinned to one core in a
process of its own (:func:`benchmarks.glow_speed.run_worker`), where jaxlib's LAPACK
kernels cannot deadlock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import device, glow_speed, isolation, torch_glow
from .glow_speed import ACTION, ROWS, STAND_IN, Shape
from .harness import Section, markdown_table, ms, records

#: Seconds for the whole table; with JAX's start and the report, under 9 minutes.
DEFAULT_BUDGET = 450.0
#: Theirs gets this share of the budget; what it leaves passes to ours.
TORCH_SHARE = 0.25
#: Our rows in the order they run: both comparisons on every shape, then the rest.
TIERS = (("opt15", "baseline", STAND_IN), (ACTION, "ps", "jax.scipy"))
#: A row of ours is not started with less time than this left (full run, smoke).
MIN_ROW_SECONDS = {False: 30.0, True: 2.0}
#: Seconds the torch process may take beyond its share (its start and its last row).
TORCH_GRACE_SECONDS = 60.0


def workloads(smoke: bool) -> tuple[Shape, ...]:
    """The paper's shapes, or :data:`benchmarks.glow_speed.TINY` for ``--smoke``."""
    if smoke:
        return (glow_speed.TINY,)
    samples = (1, 16, 128)
    cifar = Shape("CIFAR-10 (32x32x3)", (32, 32, 3), 3, (8, 4, 2), 64, samples)
    imagenet = Shape("ImageNet 64x64", (64, 64, 3), 4, (8, 4, 2, 2), 8, samples)
    larger = dataclasses.replace(
        imagenet, name="ImageNet 64x64, batch 64", train_batch=64, sample_batches=()
    )
    return cifar, imagenet, larger


def schedule(shapes: Sequence[Shape], methods: Sequence[str]) -> list[tuple[Shape, str]]:
    """The (shape, method) rows to measure, in the order :data:`TIERS` gives them."""
    return [
        (shape, method)
        for tier in TIERS
        for shape in shapes
        for method in tier
        if method in methods
    ]


# ------------------------------------------------------------------------------ ours


def run_ours(
    shapes: Sequence[Shape],
    methods: Sequence[str],
    *,
    net: str,
    repeats: int,
    deadline: float,
    min_row: float,
    backend: str,
    bar,
) -> dict[str, dict[str, dict]]:
    """Every (shape, method) in this process, by priority, within ``deadline``.

    Args:
      shapes: the workloads.
      methods: the rows to measure (of :data:`benchmarks.glow_speed.ROWS`); the others
        are reported as not run.
      net: "paper" or "small" coupling networks.
      repeats: timed calls per measurement.
      deadline: a ``time.perf_counter()``: no row starts with under ``min_row`` left
        (but the first), and one still running :data:`benchmarks.device.GRACE_SECONDS`
        after it is stopped.
      min_row: seconds.
      backend: JAX's default backend (on the CPU, jax.scipy runs pinned, apart).
      bar: a progress bar, advanced once per row.

    Returns:
      shape name -> method -> :func:`benchmarks.glow_speed.measure`'s result with
      ``wall_s``, or ``{"error": why}``.
    """
    data: dict[str, dict[str, dict]] = {
        shape.name: {m: {"error": "not run"} for m in ROWS} for shape in shapes
    }
    first = True
    for shape, method in schedule(shapes, methods):
        bar.set_postfix_str(f"{shape.name} {method}")
        left = deadline - time.perf_counter()
        if left < min_row and not first:
            why = f"skipped: time budget ({max(0.0, left):.0f} s left)"
            data[shape.name][method] = {"error": why}
            bar.update()
            continue
        spec = glow_speed.spec(shape, method, net, repeats)
        t0 = time.perf_counter()
        if glow_speed.pinned(method, backend):
            limit = max(left, min_row) + device.GRACE_SECONDS
            result = glow_speed.run_worker(spec, limit, pin_to_one_core=True)
            result["pinned_to_one_core"] = True
        else:
            try:
                if first:
                    result = glow_speed.measure(spec)
                else:
                    with device.alarm(deadline + device.GRACE_SECONDS):
                        result = glow_speed.measure(spec)
                result["wall_s"] = time.perf_counter() - t0
            except device.OutOfTime:
                result = {"error": "stopped: past the time budget"}
            except Exception as e:  # one row's failure (or memory) must not end the run
                result = {"error": glow_speed.describe_error(e)}
        data[shape.name][method] = result
        first = False
        bar.update()
    return data


# ---------------------------------------------------------------------------- theirs


def run_theirs(
    checkout: Path,
    shapes: Sequence[Shape],
    *,
    net: str,
    repeats: int,
    seconds: float,
    min_row: float,
) -> dict:
    """Their Glow on ``shapes`` in one process of its own (:mod:`benchmarks.torch_glow`).

    Args:
      checkout: a checkout of dafaronbi/fast-matrix-exponential.
      shapes: the workloads; their rows train on the images ours train on.
      net: "paper" or "small" coupling networks.
      repeats: timed calls per measurement.
      seconds: the process's share of the budget (it stops starting rows then, and is
        ended :data:`TORCH_GRACE_SECONDS` later).
      min_row: no row starts with less time than this left.

    Returns:
      :func:`benchmarks.torch_glow.run`'s result with ``wall_s``, or ``{"error": why}``.
    """
    with tempfile.TemporaryDirectory() as folder:
        images = {}
        for i, shape in enumerate(shapes):
            images[shape.name] = str(Path(folder) / f"images-{i}.npy")
            np.save(images[shape.name], glow_speed.images(shape))
        spec = {
            "shapes": [dataclasses.asdict(s) for s in shapes],
            "expms": list(torch_glow.EXPMS),
            "net": net,
            "repeats": repeats,
            "seconds": seconds,
            "min_row": min_row,
            "images": images,
        }
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.torch_glow",
            "--checkout",
            str(checkout),
            "--spec",
            json.dumps(spec),
        ]
        # Idle time is allowed for: a child waiting on the GPU uses little CPU.
        return isolation.run_isolated(
            cmd, seconds + TORCH_GRACE_SECONDS, idle_seconds=seconds + TORCH_GRACE_SECONDS
        )


# ---------------------------------------------------------------------------- report


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f} s"


def _ratio(num: float | None, den: float | None) -> str | None:
    return None if num is None or den is None else f"{num / den:.2f}x"


def _note(result: dict) -> str | None:
    return result.get("error")


def report(
    shapes: Sequence[Shape],
    ours: dict[str, dict[str, dict]],
    theirs: dict | None,
) -> Section:
    """The tables of every shape (training step, sampling, the two comparisons).

    Args:
      shapes: the workloads.
      ours: :func:`run_ours`'s result.
      theirs: :func:`run_theirs`'s result (None: not run).

    Returns:
      The markdown and ``{"ours", "theirs", "ratios"}`` as data.
    """
    their_rows = (theirs or {}).get("rows", {})
    parts, ratios = [], {}
    for shape in shapes:
        res = ours[shape.name]
        mine = their_rows.get(shape.name, {})
        free = res[STAND_IN].get("step_s")
        rows = []
        for method in ROWS:
            r = res[method]
            t = r.get("step_s")
            share = None
            if t is not None and free is not None and method != STAND_IN:
                share = f"{100 * max(0.0, 1 - free / t):.0f}%"
            base = res["baseline"].get("step_s")
            label = f"{method} (1 core)" if r.get("pinned_to_one_core") else method
            rows.append(
                ["jexpm (JAX)", label, ms_cell(t), _ratio(base, t), share,
                 _seconds(r.get("compile_s")), _note(r)]
            )  # fmt: skip
        for expm in torch_glow.EXPMS:
            if theirs is None:
                break
            r = mine.get(expm, {"error": theirs.get("error", "not run")})
            rows.append(
                ["authors' PyTorch", torch_glow.LABELS[expm], ms_cell(r.get("step_s")), None, None,
                 _seconds(r.get("first_call_s")), _note(r)]
            )  # fmt: skip
        headers = [
            "implementation",
            "exponential",
            "step (median)",
            "our baseline / row",
            "expm share",
            "compile / first call",
            "note",
        ]
        parts.append(
            f"#### {shape.name}: training step, batch {shape.train_batch}\n\n"
            + markdown_table(headers, rows)
        )
        if shape.sample_batches:
            parts.append(_sampling_table(shape, res, mine if theirs is not None else None))
        table, ratios[shape.name] = _comparisons(shape, res, mine)
        parts.append(table)
    notes = [
        "Ratios are the slower time over the faster: above 1, the second named is faster. "
        "The expm share is 1 - (stand-in step / row's step). Compile times are the first "
        "call of each jitted program (for sampling, per batch), apart from the medians; "
        "for the authors' PyTorch, the first call (no compilation).",
        "The eager Xiao–Liu loop (benchmarks/paper_loop.py) reads each term's norm back "
        "to the host, so it cannot run inside our jitted step; per call, the expm table "
        "of `python -m benchmarks.device` sets it against opt15 (column `paper loop/opt15`).",
    ]
    if theirs is None:
        notes.append(
            "The authors' PyTorch Glow was not run: give `--torch-glow PATH`, a checkout of "
            "dafaronbi/fast-matrix-exponential."
        )
    elif "error" in theirs:
        notes.append(f"The authors' PyTorch Glow: {theirs['error']}.")
    else:
        notes.append(
            f"The authors' PyTorch Glow: torch {theirs['torch']} on {theirs['device']}, "
            f"in a process of its own ({theirs.get('wall_s', 0):.0f} s)."
        )
    if any(r.get("pinned_to_one_core") for res in ours.values() for r in res.values()):
        notes.append(
            "(1 core): run pinned to one CPU core in a process of its own, where jaxlib's "
            "CPU LAPACK kernels (inside jax.scipy.linalg.expm) cannot deadlock."
        )
    parts.append("\n\n".join(notes))
    data = {"ours": ours, "theirs": theirs, "ratios": ratios}
    return Section("\n\n".join(parts), data)


def ms_cell(seconds: float | None) -> str | None:
    """Seconds as "12.3 ms" (three significant digits), or None."""
    text = ms(seconds)
    return None if text is None else f"{text} ms"


def _sampling_table(shape: Shape, res: dict, mine: dict | None) -> str:
    batches = [str(n) for n in shape.sample_batches]

    def cells(r: dict, first_key: str) -> list:
        times = r.get("sample_s") or {}
        errors = r.get("sample_errors") or {}
        firsts = r.get(first_key) or {}
        compile_cell = " / ".join(f"{firsts[b]:.1f}" if b in firsts else "—" for b in batches)
        row = [ms_cell(times.get(b)) if b in times else errors.get(b) for b in batches]
        return [*row, f"{compile_cell} s" if firsts else None, r.get("error")]

    rows = []
    for method in ROWS:
        rows.append(["jexpm (JAX)", method, *cells(res[method], "sample_compile_s")])
    if mine is not None:
        for expm in torch_glow.EXPMS:
            r = mine.get(expm, {"error": "not run"})
            rows.append(["authors' PyTorch", torch_glow.LABELS[expm], *cells(r, "sample_first_s")])
    headers = [
        "implementation",
        "exponential",
        *[f"batch {b}" for b in batches],
        f"compile / first call ({' / '.join(batches)})",
        "note",
    ]
    return f"#### {shape.name}: sampling latency (median)\n\n" + markdown_table(headers, rows)


def _comparisons(shape: Shape, res: dict, mine: dict) -> tuple[str, list[dict]]:
    """The paper's comparison and the fair one, as ratios of times (slower / faster)."""
    batches = [str(n) for n in shape.sample_batches]

    def times(r: dict | None) -> list[float | None]:
        r = r or {}
        return [r.get("step_s"), *[(r.get("sample_s") or {}).get(b) for b in batches]]

    old, new = times(mine.get("old")), times(mine.get("new"))
    opt15, baseline = times(res["opt15"]), times(res["baseline"])
    unmeasured: list[float | None] = [None] * (1 + len(batches))
    pairs = [
        ("the paper's comparison", "their old (Xiao–Liu loop) / their new", old, new),
        ("the paper's comparison", "eager Xiao–Liu loop / our opt15", unmeasured, opt15),
        ("the fair one", "our jitted baseline / our opt15", baseline, opt15),
        ("the fair one", "their new / our opt15", new, opt15),
    ]
    headers = ["comparison", "ratio", "training step", *[f"sampling batch {b}" for b in batches]]
    rows = [
        [kind, name, *[_ratio(n, d) for n, d in zip(num, den, strict=True)]]
        for kind, name, num, den in pairs
    ]
    table = f"#### {shape.name}: the two comparisons\n\n" + markdown_table(headers, rows)
    return table, records(headers, rows)


# ------------------------------------------------------------------------------ main


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paper_gpu",
        description="The paper's Glow experiment on one card in one process: every "
        "exponential's training step, expm share and sampling latency at the CIFAR-10 "
        "and ImageNet 64x64 shapes, and the authors' PyTorch Glow beside it.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument(
        "--torch-glow",
        type=Path,
        default=None,
        metavar="PATH",
        help="a checkout of dafaronbi/fast-matrix-exponential: time their Glow too",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shape and networks, to check the program"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help="seconds for all rows (default %(default)s; with --torch-glow, theirs get "
        f"{100 * TORCH_SHARE:.0f}%% of them first)",
    )
    parser.add_argument(
        "--net",
        choices=("small", "paper"),
        default=None,
        help="coupling networks: the paper's 128 channels/8 blocks (default) or 32/1 "
        "(the default with --smoke)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated rows of ours to measure (default all: {', '.join(ROWS)})",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls each (default 5; 1 with --smoke)"
    )
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error("--budget must be positive")
    if args.torch_glow is not None and not (args.torch_glow / "nets.py").is_file():
        parser.error(f"--torch-glow: no nets.py in {args.torch_glow}")
    if args.methods is None:
        args.methods = list(ROWS)
    else:
        try:
            args.methods = glow_speed.parse_rows(args.methods)
        except ValueError as error:
            parser.error(f"--methods: {error}")
    args.net = args.net or ("small" if args.smoke else "paper")
    args.repeats = args.repeats or (1 if args.smoke else 5)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Theirs (if asked for), then ours, then the report, within the budget.

    Args:
      argv: the options (``--help``), as in ``sys.argv[1:]``, which is the default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    # Before JAX starts: the torch process uses the card first, then this one.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    start = time.perf_counter()

    import jax

    from .harness import finish, progress

    backend = jax.default_backend()
    shapes = workloads(args.smoke)
    deadline = start + args.budget
    theirs, used = None, {}
    if args.torch_glow is not None:
        t0 = time.perf_counter()
        theirs = run_theirs(
            args.torch_glow,
            shapes,
            net=args.net,
            repeats=args.repeats,
            seconds=TORCH_SHARE * args.budget,
            min_row=MIN_ROW_SECONDS[args.smoke],
        )
        used["theirs"] = time.perf_counter() - t0
    rows = schedule(shapes, args.methods)
    t0 = time.perf_counter()
    with progress(total=len(rows), desc="glow") as bar:
        ours = run_ours(
            shapes,
            args.methods,
            net=args.net,
            repeats=args.repeats,
            deadline=deadline,
            min_row=MIN_ROW_SECONDS[args.smoke],
            backend=backend,
            bar=bar,
        )
    used["ours"] = time.perf_counter() - t0
    table = report(shapes, ours, theirs)
    title = (
        f"### Glow training and sampling, ours and theirs ({args.net} coupling networks, "
        f"medians of {args.repeats} timed calls)\n\n"
    )
    sections = {
        "glow": dataclasses.replace(table, markdown=title + table.markdown),
        "budget": Section(
            f"### Time (budget {args.budget:g} s)\n\n"
            + "\n".join(f"- {name}: {seconds:.0f} s" for name, seconds in used.items()),
            {"budget_s": args.budget, "used_s": used},
        ),
    }
    out = args.out / f"paper-{backend}{'-smoke' if args.smoke else ''}.md"
    finish(out, "The paper's Glow experiment", "benchmarks.paper_gpu", argv, sections, start)


if __name__ == "__main__":
    main()
