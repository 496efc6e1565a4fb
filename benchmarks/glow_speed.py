"""Glow step and sampling: training-step time and sampling latency per exponential.

The Glow at CIFAR-10 shape (batch 64, 32x32x3, 3 levels of 8/4/2 steps) and ImageNet
64x64 shape (4 levels), for each exponential (``baseline``, ``ps``, ``opt15``,
``jax.scipy``, every coupling forming its exponentials as in the papers) and for opt15
with the model's default couplings, which apply the exponential to each pixel's vector
where that is faster (:data:`ACTION`), plus the share of the step spent in the
exponential: the step time
against the same step with every exponential replaced by the cost-free I + A
(:data:`STAND_IN`, registered with ``flows.register_exponential`` in the worker). Same
data, same seed, medians of ``repeats`` calls after a compiling warm-up.

Each (shape, method) runs in its own process (:mod:`benchmarks.isolation`): its limit
covers compile time (at least 300 s and 3x the slowest method so far), a worker that
stops using the CPU is reported as deadlocked rather than slow, and on the CPU
``jax.scipy`` runs pinned to one core, where jaxlib's LAPACK kernels cannot deadlock
(``docs/known_issues.md``); its row says so. A method that does not finish is skipped on
the larger shapes. On Linux the workers run with glibc's malloc serving large blocks
from transparent huge pages (:data:`HUGE_PAGES`, unless ``GLIBC_TUNABLES`` is already
set): XLA:CPU allocates a call's temporaries afresh (hundreds of MB for a step), and
with 4 KiB pages touching them costs ~100,000 page faults per CIFAR-shape step
(``docs/results/glow_step.md``). On a CPU the coupling networks are shrunk (``net="small"``: 32
hidden channels, 1 residual block) so that the run fits in minutes; the flow itself
(levels, steps, matrix sizes and counts) stays the paper's. ``net="paper"`` uses 128
channels and 8 residual blocks.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import isolation
from .harness import Section, markdown_table

METHODS = ("baseline", "ps", "opt15", "jax.scipy")
#: opt15 with the couplings' exponentials applied to each pixel's vector
#: (``jexpm.expm_multiply``; the model's default) where the METHODS rows form them.
ACTION = "opt15 + action"
STAND_IN = "stand-in (I + A)"
#: Every row of the tables, in order.
ROWS = (*METHODS, ACTION, STAND_IN)
#: The workers' allocator setting on Linux (glibc >= 2.35; ignored by older ones, and a
#: no-op where transparent huge pages are off).
HUGE_PAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
#: Under a deadline, a (shape, method) is not started with less time than this left.
MIN_WORKER_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Shape:
    """A Glow workload: data shape, architecture and batch sizes."""

    name: str
    image_shape: tuple[int, int, int]
    levels: int
    steps_per_level: tuple[int, ...]
    train_batch: int
    sample_batches: tuple[int, ...]


TINY = Shape("tiny (8x8x3)", (8, 8, 3), 2, (1, 1), 4, (1, 2))


def shapes(gpu: bool, quick: bool) -> list[Shape]:
    """The workloads of a run: CIFAR-10 shape always, ImageNet 64x64 unless quick."""
    out = [Shape("CIFAR-10 (32x32x3)", (32, 32, 3), 3, (8, 4, 2), 64, (1, 16, 128))]
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


def parse_rows(text: str) -> list[str]:
    """Comma-separated rows of :data:`ROWS`, as an option gives them.

    Raises:
      ValueError: a name that is not a row, or none at all.
    """
    rows = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown or not rows:
        raise ValueError(f"choose from {', '.join(ROWS)} (got {unknown or 'none'})")
    return rows


def spec(shape: Shape, method: str, net: str, repeats: int) -> dict:
    """The JSON-ready description of one (shape, method) that :func:`measure` takes."""
    return {"shape": dataclasses.asdict(shape), "method": method, "net": net, "repeats": repeats}


def pinned(method: str, backend: str) -> bool:
    """Whether ``method`` runs pinned to one CPU core on ``backend``."""
    return method == "jax.scipy" and backend == "cpu"


# --------------------------------------------------------------------- worker process


@functools.lru_cache(maxsize=8)
def _images(shape: Shape, n: int) -> np.ndarray:
    """Real images of the shape: default-dataset patches (upsampled 2x for 64x64).

    Cached: the rows of one process (:mod:`benchmarks.paper_gpu`) share their data.
    """
    from flows import input_pipeline

    source = input_pipeline.load("default", "train")
    x = source[np.arange(n) % len(source)]
    h, w, _ = shape.image_shape
    if h >= 32:
        factor = h // 32
        return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    return x[:, :h, :w]


def images(shape: Shape) -> np.ndarray:
    """The uint8 (n, h, w, 3) images every row of ``shape`` trains on (n >= 64)."""
    return _images(shape, max(shape.train_batch, 64))


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (XLA's RESOURCE_EXHAUSTED, torch's OOM)."""
    text = f"{type(error).__name__}: {error}"
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def describe_error(error: BaseException) -> str:
    """A row's note for an exception: "out of memory" or "failed: " and its first line."""
    if out_of_memory(error):
        return "out of memory"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"failed: {type(error).__name__}: {text[:200]}"


def measure(spec: dict) -> dict:
    """Time one (shape, method) in this process: a jitted training step and sampling.

    The step is compiled as the training program compiles it and timed after its
    compiling first call; sampling is compiled and timed per batch size. Every timed
    call ends in ``jax.block_until_ready``. Called by :func:`worker` in a process of
    its own and by :mod:`benchmarks.paper_gpu` for every row in one process.

    Args:
      spec: ``{"shape": dataclasses.asdict(Shape), "method", "net", "repeats"}``;
        method :data:`STAND_IN` is the cost-free I + A.

    Returns:
      ``{"compile_s", "step_s", "sample_compile_s": {batch: seconds}, "sample_s":
      {batch: seconds}}``, and ``"sample_errors": {batch: why}`` for sampling batches
      that ran out of memory.

    Raises:
      Whatever building, compiling or running the step raises (e.g. XLA's
      RESOURCE_EXHAUSTED when the training batch does not fit).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import flows
    from flows import train

    flows.register_exponential(
        STAND_IN, lambda a, tol: jnp.eye(a.shape[-1], dtype=a.dtype) + a, replace=True
    )
    shape = Shape(**{**spec["shape"], "image_shape": tuple(spec["shape"]["image_shape"])})
    shape = dataclasses.replace(
        shape,
        steps_per_level=tuple(shape.steps_per_level),
        sample_batches=tuple(shape.sample_batches),
    )
    hidden, blocks = (128, 8) if spec["net"] == "paper" else (32, 1)
    method, action = ("opt15", None) if spec["method"] == ACTION else (spec["method"], False)
    model_options = flows.GlowOptions(
        levels=shape.levels,
        steps_per_level=shape.steps_per_level,
        hidden_channels=hidden,
        residual_blocks=blocks,
        coupling_action=action,
        expm_method=method,
    )
    model = flows.Glow(shape.image_shape, model_options, rngs=nnx.Rngs(0))
    data = images(shape)
    model.initialize(train.dequantize_init_batch(jnp.asarray(data[:64]), 0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamax(1e-3)
    state = {"state": train.create_train_state(params, tx)}
    # Compiled as the training program compiles it.
    options = train.compiler_options()
    step = jax.jit(
        functools.partial(train.train_step, graphdef=graphdef, tx=tx, ema_decay=0.999),
        donate_argnums=0,
        compiler_options=options,
    )
    batch = jnp.asarray(data[: shape.train_batch])
    key = jax.random.key(0)

    def train_step():
        state["state"], _ = jax.block_until_ready(step(state["state"], batch, key))

    t0 = time.perf_counter()
    train_step()
    result: dict = {"compile_s": time.perf_counter() - t0}
    result["step_s"] = _median_seconds(train_step, spec["repeats"])
    params = state["state"].params
    result["sample_compile_s"], result["sample_s"], errors = {}, {}, {}
    for n in shape.sample_batches:
        sample = jax.jit(
            lambda p, k, n=n: nnx.merge(graphdef, p).sample(k, n, 0.7), compiler_options=options
        )
        try:
            t0 = time.perf_counter()
            jax.block_until_ready(sample(params, key))
            result["sample_compile_s"][str(n)] = time.perf_counter() - t0
            seconds = _median_seconds(
                lambda s=sample: jax.block_until_ready(s(params, key)), spec["repeats"]
            )
        except Exception as e:  # a batch that does not fit: the others still count
            if not out_of_memory(e):
                raise
            errors[str(n)] = "out of memory"
            continue
        result["sample_s"][str(n)] = seconds
    if errors:
        result["sample_errors"] = errors
    return result


def worker(spec: dict) -> dict:
    """:func:`measure` as a worker process runs it, with the process's allocator setting.

    Args:
      spec: as for :func:`measure`.

    Returns:
      :func:`measure`'s result and ``"glibc_tunables"``, the worker's
      ``GLIBC_TUNABLES`` (None: unset).
    """
    return measure(spec) | {"glibc_tunables": os.environ.get("GLIBC_TUNABLES")}


def worker_env() -> dict[str, str]:
    """The workers' environment: this process's, plus :data:`HUGE_PAGES` on Linux.

    A ``GLIBC_TUNABLES`` already set is kept as it is.
    """
    env = dict(os.environ)
    if sys.platform == "linux" and "GLIBC_TUNABLES" not in env:
        env.update(HUGE_PAGES)
    return env


def run_worker(spec: dict, limit: float, *, pin_to_one_core: bool = False) -> dict:
    """:func:`worker` in its own process, in :func:`worker_env`.

    See :func:`benchmarks.isolation.run_isolated` for the limit and the result.
    """
    cmd = [sys.executable, "-m", "benchmarks.glow_speed", json.dumps(spec)]
    return isolation.run_isolated(cmd, limit, pin_to_one_core=pin_to_one_core, env=worker_env())


# ---------------------------------------------------------------------------- section


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{1e3 * seconds:.1f} ms"


def _label(method: str, backend: str) -> str:
    return f"{method} (1 core)" if pinned(method, backend) else method


def run(
    shape_list: Sequence[Shape],
    net: str,
    repeats: int,
    cap: float | None,
    backend: str,
    bar,
    deadline: float | None = None,
    methods: Sequence[str] | None = None,
) -> Section:
    """Step times, expm share and sampling latency of every method on every shape.

    Args:
      shape_list: the workloads.
      net: "small" or "paper" coupling networks.
      repeats: timed calls per measurement.
      cap: the most seconds any (shape, method) may take (None: only the limits of
        :func:`benchmarks.isolation.limit_for`).
      backend: JAX's default backend (which methods run pinned).
      bar: a tqdm progress bar, advanced once per (shape, method).
      deadline: a ``time.perf_counter()`` by which every worker must have ended:
        each gets at most the time left, and none starts with less than
        :data:`MIN_WORKER_SECONDS` left (its row then says so); None: no deadline.
      methods: the rows to measure, of :data:`METHODS`, :data:`ACTION` and
        :data:`STAND_IN` (default all); the others are reported as not run.

    Returns:
      Two tables per shape (training step, sampling latency).
    """
    data: dict[str, dict[str, dict]] = {}
    for shape in shape_list:
        data[shape.name] = {}
        for method in ROWS:
            bar.set_postfix_str(f"{shape.name} {method}")
            walls = [r["wall_s"] for r in data[shape.name].values() if "wall_s" in r]
            limit = isolation.limit_for(walls, cap)
            if deadline is not None:
                limit = min(limit, deadline - time.perf_counter())
            earlier = [data[s.name][method] for s in shape_list if s.name in data and s != shape]
            skip = None
            if limit < MIN_WORKER_SECONDS and deadline is not None:
                skip = "skipped: time budget"
            elif any("wall_s" not in r for r in earlier):
                skip = "skipped: did not finish on a smaller shape"
            if methods is not None and method not in methods:
                skip = "not run"
            if skip is not None:
                data[shape.name][method] = {"error": skip}
                bar.update()
                continue
            pin = pinned(method, backend)
            result = run_worker(spec(shape, method, net, repeats), limit, pin_to_one_core=pin)
            data[shape.name][method] = result | {"pinned_to_one_core": pin}
            bar.update()
    parts = []
    for shape in shape_list:
        res = data[shape.name]
        against = "baseline" if "step_s" in res["baseline"] else "opt15"
        base = res[against].get("step_s")
        free = res[STAND_IN].get("step_s")
        rows = []
        for method in (*METHODS, ACTION):
            r = res[method]
            t = r.get("step_s")
            share = None if t is None or free is None else f"{100 * max(0.0, 1 - free / t):.0f}%"
            speedup = None if t is None or base is None else f"{base / t:.2f}x"
            compile_cell = f"{r['compile_s']:.0f} s" if t else r.get("error")
            rows.append([_label(method, backend), _ms(t), speedup, share, compile_cell])
        rows.append([STAND_IN, _ms(free), None, "0%", res[STAND_IN].get("error")])
        parts.append(
            f"#### {shape.name}: training step, batch {shape.train_batch}\n\n"
            + markdown_table(
                ["method", "step (median)", f"speedup vs {against}", "expm share", "compile"],
                rows,
            )
        )
        headers = ["method", *[f"batch {n}" for n in shape.sample_batches]]
        srows = []
        for method in (*METHODS, ACTION):
            s = res[method].get("sample_s") or {}
            srows.append(
                [_label(method, backend), *[_ms(s.get(str(n))) for n in shape.sample_batches]]
            )
        parts.append(f"#### {shape.name}: sampling latency\n\n" + markdown_table(headers, srows))
    tunables = {
        r["glibc_tunables"]
        for res in data.values()
        for r in res.values()
        if r.get("glibc_tunables")
    }
    if tunables:
        parts.append(f"Workers ran with GLIBC_TUNABLES={', '.join(sorted(tunables))}.")
    if any(pinned(m, backend) for m in METHODS):
        parts.append(
            "(1 core): run pinned to one CPU core, where jaxlib's CPU LAPACK kernels (inside "
            "jax.scipy.linalg.expm) cannot deadlock; see the documentation's Known issues."
        )
    return Section("\n\n".join(parts), data)


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
