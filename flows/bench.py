"""The paper's experiments on your machine: ``python -m flows.bench`` (``--help``).

Xiao & Liu (2020) and the Taylor-15+ paper report faster Glow training and sampling
with a better matrix exponential. This program measures, in one run on one machine:

1. **Training step and sampling latency** of the Glow at CIFAR-10 shape (batch 64,
   32x32x3, 3 levels of 8/4/2 steps) and ImageNet 64x64 shape (4 levels), for each
   exponential (``baseline``, ``ps``, ``opt15``, ``jax.scipy``), plus the share of the
   step spent in the exponential: the step time against the same step with every
   exponential replaced by the cost-free stand-in I + A. Same data, same seed,
   medians of ``--repeats`` calls after a compiling warm-up. Each (shape, method)
   runs in its own process with a time limit (twice the slowest method so far, at
   least 60 s, at most ``--timeout``), so one pathological compile or kernel cannot
   stall the run; a method that exceeds it is reported as such, and skipped on the
   larger shapes. On a CPU the
   coupling networks are shrunk (``--net small``: 32 hidden channels, 1 residual
   block) so that the run fits in minutes; the flow itself
   (levels, steps, matrix sizes and counts) stays the paper's. ``--net paper``
   uses 128 channels and 8 residual blocks (the default on a GPU).
2. **The (m, s) distribution used while training**: a short run of the ``default``
   training config, whose ``expm_stats.jsonl`` histograms of Taylor order m and
   squarings s per layer type are summed and plotted.
3. **Products and accuracy** on a fixed set of 64 matrices: total matrix products of
   opt15, ps and baseline at tol 1e-8 and at the float32 and float64 defaults, and
   the relative error of each (and of scipy) against mpmath at 50 digits, plotted
   against the condition number of exp at A times the unit roundoff, in the style of
   the paper's accuracy figure.

Tables go to stdout and, under a header naming the machine, to
``benchmarks/flows-<backend>.md`` with the PNG figures beside it; ``--readme``
also replaces the generated block of README.md's Results section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

METHODS = ("baseline", "ps", "opt15", "jax.scipy")
STAND_IN = "stand-in"
README_START = "<!-- flows.bench results: start -->"
README_END = "<!-- flows.bench results: end -->"


@dataclasses.dataclass(frozen=True)
class Shape:
    """A Glow workload: data shape, architecture and batch sizes."""

    name: str
    image_shape: tuple[int, int, int]
    levels: int
    steps_per_level: tuple[int, ...]
    train_batch: int
    sample_batches: tuple[int, ...]


def shapes(gpu: bool, quick: bool) -> list[Shape]:
    """The workloads of a run: CIFAR-10 shape always, ImageNet 64x64 unless quick."""
    out = [
        Shape(
            "CIFAR-10 (32x32x3)",
            (32, 32, 3),
            3,
            (8, 4, 2),
            64,
            (1, 16, 128),
        )
    ]
    if not quick:
        out.append(
            Shape(
                "ImageNet 64x64",
                (64, 64, 3),
                4,
                (8, 4, 2, 2),
                64 if gpu else 8,
                (1, 16, 64) if gpu else (1, 8),
            )
        )
    return out


# --------------------------------------------------------------------- worker process


def _images(shape: Shape, n: int) -> np.ndarray:
    """Real images of the shape: default-dataset patches (upsampled 2x for 64x64)."""
    from flows import input_pipeline

    source = input_pipeline.load("default", "train")
    x = source[np.arange(n) % len(source)]
    h, w, _ = shape.image_shape
    if h >= 32:
        factor = h // 32
        return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    return x[:, :h, :w]


def _worker(spec: dict) -> dict:
    """Time one (shape, method): a jitted training step and sampling per batch size."""
    import jax
    import optax
    from flax import nnx

    from flows import Glow, train

    shape = Shape(**{**spec["shape"], "image_shape": tuple(spec["shape"]["image_shape"])})
    hidden, blocks = (128, 8) if spec["net"] == "paper" else (32, 1)
    model = Glow(
        shape.image_shape,
        levels=shape.levels,
        steps_per_level=shape.steps_per_level,
        hidden_channels=hidden,
        residual_blocks=blocks,
        method=spec["method"],
        rngs=nnx.Rngs(0),
    )
    images = _images(shape, max(shape.train_batch, 64))
    model.initialize(train._dequantize_init(jax.numpy.asarray(images[:64]), 0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamax(1e-3)
    state = train._fresh_state(params, tx)
    step = jax.jit(train.make_train_step(graphdef, tx, 0.999), donate_argnums=0)
    batch = jax.numpy.asarray(images[: shape.train_batch])
    key = jax.random.key(0)
    result: dict = {}
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch, key))
    result["compile_s"] = time.perf_counter() - t0
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, batch, key))
        times.append(time.perf_counter() - t0)
    result["step_s"] = statistics.median(times)
    params = state["params"]
    result["sample_s"] = {}
    for n in shape.sample_batches:
        sample = jax.jit(lambda p, k, n=n: nnx.merge(graphdef, p).sample(k, n, 0.7))
        jax.block_until_ready(sample(params, key))
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            jax.block_until_ready(sample(params, key))
            times.append(time.perf_counter() - t0)
        result["sample_s"][str(n)] = statistics.median(times)
    return result


def _run_worker(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "flows.bench", "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed: {last[:200]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------- sections


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{1e3 * seconds:.1f} ms"


def run_speed(shape_list: Sequence[Shape], net: str, repeats: int, timeout: float, bar):
    """Section 1: step times, expm share and sampling latency; returns (markdown, data)."""
    from jexpm.bench import markdown_table

    data: dict[str, dict[str, dict]] = {}
    for shape in shape_list:
        data[shape.name] = {}
        for method in (*METHODS, STAND_IN):
            spec = {
                "shape": dataclasses.asdict(shape),
                "method": method,
                "net": net,
                "repeats": repeats,
            }
            bar.set_postfix_str(f"{shape.name} {method}")
            earlier = [data[s.name][method] for s in shape_list if s.name in data and s != shape]
            if any("did not finish" in r.get("error", "") for r in earlier):
                data[shape.name][method] = {"error": "skipped: did not finish on a smaller shape"}
                bar.update()
                continue
            # Allow any method twice the slowest one so far (at least 60 s), at most --timeout.
            walls = [r["wall_s"] for r in data[shape.name].values() if "wall_s" in r]
            limit = min(timeout, max(60.0, 2 * max(walls))) if walls else timeout
            data[shape.name][method] = _run_worker(spec, limit)
            bar.update()
    parts = []
    for shape in shape_list:
        res = data[shape.name]
        base = res["baseline"].get("step_s")
        free = res[STAND_IN].get("step_s")
        rows = []
        for method in METHODS:
            r = res[method]
            t = r.get("step_s")
            share = None if t is None or free is None else f"{100 * max(0.0, 1 - free / t):.0f}%"
            speedup = None if t is None or base is None else f"{base / t:.2f}x"
            rows.append(
                [method, _ms(t), speedup, share, f"{r['compile_s']:.0f} s" if t else r.get("error")]
            )
        rows.append([f"{STAND_IN} (I + A)", _ms(free), None, "0%", None])
        parts.append(
            f"#### {shape.name}: training step, batch {shape.train_batch}\n\n"
            + markdown_table(
                ["method", "step (median)", "speedup vs baseline", "expm share", "compile"],
                rows,
            )
        )
        headers = ["method", *[f"batch {n}" for n in shape.sample_batches]]
        srows = []
        for method in METHODS:
            s = res[method].get("sample_s") or {}
            srows.append([method, *[_ms(s.get(str(n))) for n in shape.sample_batches]])
        parts.append(f"#### {shape.name}: sampling latency\n\n" + markdown_table(headers, srows))
    return "\n\n".join(parts), data


def run_training_stats(steps: int, out_png: Path) -> str:
    """Section 2: a short default-config run; (m, s) histograms per layer type."""
    from flows import _plotting, configs, train
    from jexpm.bench import markdown_table

    config = dataclasses.replace(
        configs.get_config("default"),
        num_train_steps=steps,
        log_every_steps=max(steps // 10, 1),
        eval_every_steps=10 * steps,
        checkpoint_every_steps=10 * steps,
        num_eval_batches=1,
        num_samples=4,
    )
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir, progress=False)
        rows = [
            json.loads(line)
            for line in (Path(workdir) / "expm_stats.jsonl").read_text().splitlines()
        ]
    panels: dict[str, dict[str, int]] = {}
    for row in rows:
        for what in ("order", "squarings"):
            panel = panels.setdefault(f"{row['kind']}: {'m' if what == 'order' else 's'}", {})
            for k, v in row[what].items():
                panel[k] = panel.get(k, 0) + v
    _plotting.plot_histograms(
        out_png, panels, title=f"(m, s) used over {steps} training steps (default config)"
    )
    table_rows = [
        [
            name,
            ", ".join(
                f"{k}: {100 * v / sum(c.values()):.1f}%"
                for k, v in sorted(c.items(), key=lambda kv: float(kv[0]))
            ),
        ]
        for name, c in panels.items()
    ]
    return (
        f"(m, s) over a {steps}-step run of the `default` training config "
        f"(opt15, float32 tolerance), logged every {config.log_every_steps} steps:\n\n"
        + markdown_table(["layer: value", "share of exponentials"], table_rows)
        + f"\n\n![(m, s) histograms]({out_png.name})"
    )


def matrix_set(seed: int = 0) -> list[np.ndarray]:
    """64 fixed test matrices of sizes 4 to 12 at 1-norms from 1e-3 to 300.

    Four kinds at each of 16 norms: Gaussian, strongly non-normal triangular,
    skew-symmetric (rotation generators) and diagonal plus strictly upper triangular.
    """
    rng = np.random.default_rng(seed)
    out = []
    norms = np.logspace(-3, 2.5, 16)
    for i, norm in enumerate(norms):
        n = 4 + (i % 9)
        for kind in range(4):
            a = rng.standard_normal((n, n))
            if kind == 1:
                a = np.triu(a) + 10 * np.triu(rng.standard_normal((n, n)), 1)
            elif kind == 2:
                a = a - a.T
            elif kind == 3:
                a = np.diag(rng.standard_normal(n)) + np.triu(rng.standard_normal((n, n)), 1) * 5
            out.append(a * norm / np.abs(a).sum(axis=0).max())
    return out


def _mp_expm(a: np.ndarray, dps: int = 50) -> np.ndarray:
    import mpmath

    with mpmath.workdps(dps):
        e = mpmath.expm(mpmath.matrix(a.tolist()))
        return np.array(e.tolist(), dtype=float)


def run_products_accuracy(out_png: Path) -> str:
    """Section 3: products per method and tolerance; accuracy against conditioning."""
    import jax
    import scipy.linalg

    import jexpm
    from flows import _plotting
    from jexpm.bench import markdown_table

    mats = matrix_set()
    rows = []
    with jax.enable_x64(True):
        for label, dtype, tol in (
            ("float64, tol 1e-8", np.float64, 1e-8),
            ("float64, default (2^-53)", np.float64, None),
            ("float32, default (2^-24)", np.float32, None),
        ):
            row = [label]
            for method in jexpm.METHODS:
                total = 0
                for a in mats:
                    _, info = jexpm.expm(a.astype(dtype), tol=tol, method=method, return_info=True)
                    total += int(info.products)
                row.append(total)
            rows.append(row)
        refs = [_mp_expm(a) for a in mats]
        cond_u = [scipy.linalg.expm_cond(a) * 2.0**-53 for a in mats]
        errors: dict[str, list[float]] = {m: [] for m in (*jexpm.METHODS, "scipy")}
        for a, ref in zip(mats, refs, strict=True):
            den = np.abs(ref).sum(axis=0).max()
            for m in errors:
                x = scipy.linalg.expm(a) if m == "scipy" else np.asarray(jexpm.expm(a, method=m))
                errors[m].append(float(np.abs(x - ref).sum(axis=0).max() / den))
    order = np.argsort(cond_u)
    curves = {
        m: ([cond_u[i] for i in order], [max(e[i], 1e-18) for i in order])
        for m, e in errors.items()
    }
    curves["cond(exp, A) * u"] = ([cond_u[i] for i in order], [cond_u[i] for i in order])
    _plotting.plot_curves(
        out_png,
        curves,
        xlabel="cond(exp, A) · u  (u = 2^-53)",
        ylabel="relative error (1-norm)",
        title=f"{len(mats)} matrices, float64, reference mpmath 50 digits",
        logx=True,
        logy=True,
    )
    within = {
        m: sum(e[i] <= 10 * max(cond_u[i], 2.0**-53) for i in range(len(mats)))
        for m, e in errors.items()
    }
    acc_rows = [
        [m, f"{statistics.median(e):.1e}", f"{max(e):.1e}", f"{within[m]}/{len(mats)}"]
        for m, e in errors.items()
    ]
    return (
        f"Total matrix products over the {len(mats)} matrices of `flows.bench.matrix_set`:\n\n"
        + markdown_table(["tolerance", *jexpm.METHODS], rows)
        + "\n\nfloat64 relative error against mpmath (50 digits):\n\n"
        + markdown_table(["method", "median", "max", "within 10·max(cond·u, u)"], acc_rows)
        + f"\n\n![accuracy against conditioning]({out_png.name})"
    )


# ------------------------------------------------------------------------------ driver


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flows.bench",
        description="Glow training-step and sampling speed per matrix exponential, the "
        "(m, s) used in training, and products/accuracy on a fixed matrix set.",
    )
    parser.add_argument("--quick", action="store_true", help="CIFAR shape only, fewer sizes")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5)")
    parser.add_argument(
        "--net",
        choices=("small", "paper"),
        default=None,
        help="coupling networks: 32 channels/1 block, or the paper's 128/8 (default: "
        "paper on a GPU, small otherwise)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="most seconds per method and shape"
    )
    parser.add_argument("--train-steps", type=int, default=None, help="for the (m, s) run")
    parser.add_argument("--out", default=None, help="markdown file (default benchmarks/...)")
    parser.add_argument("--readme", action="store_true", help="update README.md's Results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _update_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no {README_START} ... {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{block}\n{README_END}{tail}")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    import jax
    from tqdm import tqdm

    from jexpm.bench import machine_header

    gpu = jax.default_backend() == "gpu"
    net = args.net or ("paper" if gpu else "small")
    repeats = args.repeats or (3 if args.quick else 5)
    train_steps = args.train_steps or (60 if args.quick else 100)
    backend = jax.default_backend()
    out = Path(args.out or f"benchmarks/flows-{backend}{'-quick' if args.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    shape_list = shapes(gpu, args.quick)
    start = time.perf_counter()
    with tqdm(total=len(shape_list) * (len(METHODS) + 1) + 2, desc="flows.bench") as bar:
        speed_md, _ = run_speed(shape_list, net, repeats, args.timeout, bar)
        bar.set_postfix_str("(m, s) training run")
        stats_md = run_training_stats(train_steps, Path(f"{stem}-ms.png"))
        bar.update()
        bar.set_postfix_str("products and accuracy")
        acc_md = run_products_accuracy(Path(f"{stem}-accuracy.png"))
        bar.update()
    net_note = (
        "coupling networks as in the paper (128 channels, 8 residual blocks)"
        if net == "paper"
        else "coupling networks shrunk to 32 channels and 1 residual block (the flow's "
        "levels, steps and matrix sizes are the paper's)"
    )
    body = (
        f"### Glow training and sampling ({net_note})\n\n{speed_md}\n\n"
        f"### Taylor order and squarings used in training\n\n{stats_md}\n\n"
        f"### Products and accuracy\n\n{acc_md}"
    )
    elapsed = f"Total time: {time.perf_counter() - start:.0f} s."
    header = machine_header("flows.bench", argv).replace("jexpm.bench", "flows.bench")
    report = f"{header}\n\n{body}\n\n{elapsed}\n"
    print(report)
    out.write_text(report)
    print(f"written to {out}", file=sys.stderr)
    if args.readme:
        block = report.replace("## flows.bench", "#### Machine", 1)
        block = block.replace(f"]({stem.name}-", f"]({out.parent.as_posix()}/{stem.name}-")
        _update_readme(Path("README.md"), block)


if __name__ == "__main__":
    main()
