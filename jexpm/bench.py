"""Benchmarks: jexpm against jax.scipy.linalg.expm and torch.linalg.matrix_exp.

Run ``python -m jexpm.bench`` (``--help`` for the options). Three modes:

* default: wall time, accuracy and products of ``jexpm.expm`` (opt15, ps, baseline
  and ``jax.vmap``), ``jax.scipy.linalg.expm`` and, if installed,
  ``torch.linalg.matrix_exp`` on workloads (a)-(f) in float32 and float64 at three
  1-norm levels; then a gradient section (time of ``jax.grad`` against the forward
  pass and compiled scratch memory, jexpm against jax.scipy) and a low-precision
  section (bfloat16 and float16 beside float32, jexpm and torch);
* ``--quick``: the same on a small subset with few repeats (under two minutes on a
  two-core CPU), a smoke test;
* ``--products``: times a whole ``jexpm.expm`` with each product formulation of
  :mod:`jexpm._products` for n = 2..64, to tune its threshold.

Times are medians of ``--repeats`` calls after a warm-up call that compiles, with
``block_until_ready``; jexpm's contenders of one input are timed round-robin,
jax.scipy and torch each after them. Compare numbers within one run: machines are
noisy, and on a loaded machine multithreaded LAPACK (inside jax.scipy) and OpenMP
(torch) calls show occasional 10-1000x outliers. Errors are normwise relative 1-norm
errors against ``scipy.linalg.expm`` in float64 on the same (dtype-rounded) input, the
maximum over at most 256 members. Tables are printed as markdown and written, under a
header naming the machine, to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jexpm
from jexpm import _products

try:  # optional competitor
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

# Total elements of the batched product workloads (--products), as in workload (a).
_PRODUCT_ELEMENTS = 65536 * 36
_ERROR_SUBSAMPLE = 256
_NORMS = (0.5, 2.0, 30.0)
_QUICK_NORMS = (2.0, 30.0)
_QUICK_WORKLOADS = ("d", "f")
_QUICK_PRODUCT_SIZES = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# Gradient section: (workload, 1-norm), always float32.
_GRAD_CASES = (("d", 30.0), ("d", 3000.0), ("a", 2.0), ("b", 2.0), ("c", 2.0))
_QUICK_GRAD_CASES = (("d", 30.0),)
_GRAD_DTYPE = "float32"
_MISSING = "—"


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark input shape.

    Attributes:
      key: the letter of the workload, "a" to "f".
      batch: leading batch shape; () for a single matrix.
      n: matrix size.
      looped: the members are exponentiated one at a time, in a jitted
        ``lax.fori_loop`` over the batch axis; times are reported per call.
    """

    key: str
    batch: tuple[int, ...]
    n: int
    looped: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the input array."""
        return (*self.batch, self.n, self.n)

    @property
    def calls(self) -> int:
        """Number of expm calls one timed run makes (the time is divided by it)."""
        return self.batch[0] if self.looped else 1

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``(a) 65536×6×6``."""
        if self.looped:
            return f"({self.key}) {self.n}×{self.n} in fori_loop×{self.calls}"
        return f"({self.key}) " + "×".join(map(str, self.shape))


WORKLOADS = {
    w.key: w
    for w in (
        Workload("a", (65536,), 6),
        Workload("b", (16384,), 12),
        Workload("c", (4096,), 24),
        Workload("d", (64,), 48),
        Workload("e", (), 512),
        Workload("f", (100,), 48, looped=True),
    )
}

# The methods of the main table, in column order.
_JAX_METHODS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "opt15": functools.partial(jexpm.expm, method="opt15"),
    "ps": functools.partial(jexpm.expm, method="ps"),
    "baseline": functools.partial(jexpm.expm, method="baseline"),
    "jax.scipy": jax.scipy.linalg.expm,
}
_METHODS = (*_JAX_METHODS, "vmap", "torch")
_ERROR_METHODS = ("opt15", "jax.scipy", "torch")


# --------------------------------------------------------------------------- helpers


_Call = tuple[Callable[[], Any], Callable[[Any], Any]]  # (run once, wait for the result)
_K = TypeVar("_K")


def median_times(calls: Mapping[_K, _Call], repeats: int) -> dict[_K, tuple[float, Any]]:
    """Median wall time of each call, after one warm-up call each (which compiles).

    The calls are timed round-robin (each repeat runs every call once, in turn), so
    that load from other processes affects all of them alike.

    Args:
      calls: name -> (call, sync): ``call()`` runs the computation once and returns
        its result, ``sync(result)`` waits until it is ready (e.g.
        ``jax.block_until_ready``) and returns it.
      repeats: timed calls of each.

    Returns:
      name -> (median seconds, result of the last call).
    """
    outs = {name: sync(call()) for name, (call, sync) in calls.items()}
    times: dict[_K, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (call, sync) in calls.items():
            start = time.perf_counter()
            outs[name] = sync(call())
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), outs[name]) for name in calls}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; ``None`` cells print as a dash, others with ``str``.

    Args:
      headers: column titles.
      rows: one sequence of cells per row, as long as ``headers``.

    Returns:
      The table, one line per row, without a trailing newline.
    """
    cells = [[_MISSING if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _fmt(value: float | None, spec: str, suffix: str = "") -> str | None:
    return None if value is None else format(value, spec) + suffix


def _ms(seconds: float | None) -> str | None:
    return _fmt(None if seconds is None else seconds * 1e3, ".3g")


def _ratio(num: float | None, den: float | None) -> str | None:
    return None if num is None or den is None else _fmt(num / den, ".2f")


def random_with_norm(
    rng: np.random.Generator, shape: tuple[int, ...], norm: float, dtype: str
) -> np.ndarray:
    """Gaussian matrices scaled to the given 1-norm per member, rounded to ``dtype``."""
    a = rng.standard_normal(shape)
    a *= (norm / np.abs(a).sum(axis=-2).max(axis=-1))[..., None, None]
    return a.astype(dtype)


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-member normwise relative error in the 1-norm, in float64."""
    diff = np.abs(np.asarray(x, np.float64) - ref).sum(axis=-2).max(axis=-1)
    return float(np.max(diff / np.abs(ref).sum(axis=-2).max(axis=-1)))


def _subsample(x: np.ndarray, n: int) -> np.ndarray:
    """At most ``_ERROR_SUBSAMPLE`` evenly spaced members of x, as (k, n, n)."""
    flat = np.asarray(x).reshape(-1, n, n)
    idx = np.unique(np.linspace(0, len(flat) - 1, _ERROR_SUBSAMPLE).astype(int))
    return flat[idx]


def in_fori_loop(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """``fn`` applied to each member of a stack in turn, inside a ``lax.fori_loop``."""

    def looped(stack: jax.Array) -> jax.Array:
        out = jax.eval_shape(fn, stack[0])
        init = jnp.zeros((stack.shape[0], *out.shape), out.dtype)
        return lax.fori_loop(0, stack.shape[0], lambda i, acc: acc.at[i].set(fn(stack[i])), init)

    return looped


def _torch_device() -> str:
    if torch is not None and jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _torch_sync(out):
    if torch is not None and _torch_device() == "cuda":
        torch.cuda.synchronize()
    return out


def _to_numpy(x: Any) -> np.ndarray:
    """A JAX array or a torch tensor as a NumPy array."""
    if torch is not None and isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    return np.asarray(x)


def _temp_ratio(compiled, nbytes: int) -> float | None:
    """Compiled scratch memory as a multiple of ``nbytes`` (None if not reported)."""
    analysis = compiled.memory_analysis()
    return None if analysis is None else analysis.temp_size_in_bytes / nbytes


# ------------------------------------------------------------------------- main section


def _jax_contenders(w: Workload) -> dict[str, Callable[[jax.Array], jax.Array]]:
    """The jitted JAX contenders for one workload (vmap only for a plain batch)."""
    wrap = in_fori_loop if w.looped else (lambda f: f)
    fns = {name: jax.jit(wrap(fn)) for name, fn in _JAX_METHODS.items()}
    if w.batch and not w.looped:
        fns["vmap"] = jax.jit(jax.vmap(jexpm.expm))
    return fns


def _products_fn(w: Workload) -> Callable[[jax.Array], jax.Array]:
    """Jitted per-member product count of opt15 on the workload's input."""

    def products(a: jax.Array) -> jax.Array:
        return jexpm.expm(a, return_info=True)[1].products

    return jax.jit(in_fori_loop(products) if w.looped else products)


def _torch_call(w: Workload, x: np.ndarray) -> _Call | None:
    """torch.linalg.matrix_exp on x (member by member if looped); None without torch."""
    if torch is None:
        return None
    t = torch.from_numpy(x).to(_torch_device())
    matrix_exp, stack = torch.linalg.matrix_exp, torch.stack
    if w.looped:
        return (lambda: stack([matrix_exp(m) for m in t])), _torch_sync
    return (lambda: matrix_exp(t)), _torch_sync


def _expm_row(
    w: Workload,
    fns: dict[str, Callable[[jax.Array], jax.Array]],
    products: Callable[[jax.Array], jax.Array],
    x_np: np.ndarray,
    norm: float,
    repeats: int,
) -> list[str | None]:
    """Times, products and errors of every method on one input: one table row.

    Args:
      w: the workload.
      fns: its jitted JAX contenders, from :func:`_jax_contenders`.
      products: its product counter, from :func:`_products_fn`.
      x_np: the input, already in the benchmarked dtype.
      norm: the 1-norm of the members (for the row label).
      repeats: timed calls per method.

    Returns:
      The row, cells in the order of the headers in :func:`run_main`.
    """
    import scipy.linalg

    ref = scipy.linalg.expm(_subsample(x_np, w.n).astype(np.float64))
    x = jnp.asarray(x_np)
    calls = {name: (functools.partial(fn, x), jax.block_until_ready) for name, fn in fns.items()}
    # jax.scipy (threaded LAPACK) and torch (OpenMP) are timed apart: their idle
    # threads keep spinning for a while after a call and would slow down whichever
    # call came next in the rotation.
    apart = {name: calls.pop(name) for name in ("jax.scipy",) if name in calls}
    results = median_times(calls, repeats) | median_times(apart, repeats)
    torch_call = _torch_call(w, x_np)
    if torch_call is not None:
        results |= median_times({"torch": torch_call}, repeats)
    times = {m: results[m][0] / w.calls if m in results else None for m in _METHODS}
    errors = {
        m: rel_err(_subsample(_to_numpy(results[m][1]), w.n), ref) if m in results else None
        for m in _ERROR_METHODS
    }
    mean_products = float(jnp.mean(products(x).astype(jnp.float32)))
    return [
        w.label,
        f"{norm:g}",
        *(_ms(times[m]) for m in _METHODS),
        _ratio(times["jax.scipy"], times["opt15"]),
        _ratio(times["torch"], times["opt15"]),
        _ratio(times["vmap"], times["opt15"]),
        f"{mean_products:.2f}",
        *(_fmt(errors[m], ".1e") for m in _ERROR_METHODS),
    ]


def run_main(
    workloads: Sequence[Workload],
    dtypes: Sequence[str],
    norms: Sequence[float],
    repeats: int,
    seed: int,
) -> str:
    """The main tables: every method on every workload, dtype and 1-norm.

    Args:
      workloads: the workloads to run.
      dtypes: "float32" and/or "float64".
      norms: 1-norm of every member of the inputs.
      repeats: timed calls per measurement.
      seed: random seed (each workload draws one Gaussian stack, rescaled per norm).

    Returns:
      The markdown section, one table per dtype.
    """
    from tqdm import tqdm

    headers = [
        "workload",
        "‖A‖₁",
        *(f"{m} ms" for m in _METHODS),
        "jax.scipy/opt15",
        "torch/opt15",
        "vmap/batched",
        "opt15 products",
        *(f"err {m}" for m in _ERROR_METHODS),
    ]
    bar = tqdm(total=len(workloads) * len(dtypes) * len(norms), desc="expm", unit="case")
    sections = []
    for dtype in dtypes:
        rows = []
        for w in workloads:
            fns, products = _jax_contenders(w), _products_fn(w)
            for norm in norms:
                bar.set_postfix_str(f"{dtype} {w.label} ‖A‖₁={norm:g}")
                rng = np.random.default_rng([seed, ord(w.key)])
                x_np = random_with_norm(rng, w.shape, norm, dtype)
                rows.append(_expm_row(w, fns, products, x_np, norm, repeats))
                bar.update()
        sections.append(
            f"### expm, {dtype} (median ms per call)\n\n{markdown_table(headers, rows)}"
        )
    bar.close()
    return "\n\n".join(sections)


# --------------------------------------------------------------------- gradient section


def _forward(expm: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``a, g -> expm(a)``; g is unused, so forward and gradient take the same arguments."""
    return lambda a, g: expm(a)


def _gradient(expm: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``a, g -> d/da sum(expm(a) * g)``: the VJP of expm at a with cotangent g."""
    return jax.grad(lambda a, g: jnp.sum(expm(a) * g))


def _tangent(expm: Callable[[jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``a, g -> L(a, g)``: forward mode, the JVP of expm at a along g."""
    return lambda a, g: jax.jvp(expm, (a,), (g,))[1]


_GRAD_LIBS = {"jexpm": jexpm.expm, "jax.scipy": jax.scipy.linalg.expm}
_GRAD_KINDS = {"fwd": _forward, "grad": _gradient, "jvp": _tangent}


def run_gradients(cases: Sequence[tuple[Workload, float]], repeats: int, seed: int) -> str:
    """Forward, gradient and JVP time and compiled scratch memory, jexpm against jax.scipy.

    Args:
      cases: (workload, 1-norm) pairs, run in float32.
      repeats: timed calls per measurement.
      seed: random seed.

    Returns:
      The markdown section.
    """
    from tqdm import tqdm

    compiled: dict[tuple, Any] = {}  # (lib, kind, shape) -> compiled executable
    bar = tqdm(total=len(cases), desc="grad", unit="case")
    rows = []
    for w, norm in cases:
        bar.set_postfix_str(f"{w.label} ‖A‖₁={norm:g}")
        rng = np.random.default_rng([seed, ord(w.key)])
        x = jnp.asarray(random_with_norm(rng, w.shape, norm, _GRAD_DTYPE))
        g = jnp.asarray(rng.standard_normal(w.shape).astype(_GRAD_DTYPE))
        for lib, expm in _GRAD_LIBS.items():
            for kind, make in _GRAD_KINDS.items():
                if (lib, kind, w.shape) not in compiled:
                    compiled[lib, kind, w.shape] = jax.jit(make(expm)).lower(x, g).compile()
        calls = {
            (lib, kind): (
                functools.partial(compiled[lib, kind, w.shape], x, g),
                jax.block_until_ready,
            )
            for lib in _GRAD_LIBS
            for kind in _GRAD_KINDS
        }
        times = {key: t for key, (t, _) in median_times(calls, repeats).items()}
        memory = {key: _temp_ratio(compiled[(*key, w.shape)], x.nbytes) for key in calls}
        bar.update()
        rows.append(
            [
                w.label,
                f"{norm:g}",
                *(
                    cell
                    for lib in _GRAD_LIBS
                    for cell in (
                        _ms(times[lib, "fwd"]),
                        _ms(times[lib, "grad"]),
                        _ratio(times[lib, "grad"], times[lib, "fwd"]),
                        _ms(times[lib, "jvp"]),
                        _ratio(times[lib, "jvp"], times[lib, "fwd"]),
                    )
                ),
                _ratio(times["jax.scipy", "grad"], times["jexpm", "grad"]),
                *(
                    _fmt(memory[lib, kind], ".1f", "×")
                    for lib in _GRAD_LIBS
                    for kind in _GRAD_KINDS
                ),
            ]
        )
    bar.close()
    headers = [
        "workload",
        "‖A‖₁",
        *(
            h
            for lib in _GRAD_LIBS
            for h in (f"{lib} fwd ms", f"{lib} grad ms", "grad/fwd", f"{lib} jvp ms", "jvp/fwd")
        ),
        "grad jax.scipy/jexpm",
        *(f"{lib} {kind} temp/input" for lib in _GRAD_LIBS for kind in _GRAD_KINDS),
    ]
    return (
        f"### Gradients, {_GRAD_DTYPE} (median ms; temp = compiled scratch memory / input "
        f"bytes)\n\n{markdown_table(headers, rows)}"
    )


# ---------------------------------------------------------------- low-precision section

_LOW_DTYPES = ("float32", "bfloat16", "float16")
_LOW_SIZES, _QUICK_LOW_SIZES = (16, 32, 64), (32,)
_LOW_NORMS, _QUICK_LOW_NORMS = (0.5, 2.0, 8.0), (2.0,)
_LOW_BATCH = 64


def _torch_low_call(x32: np.ndarray, dtype: str) -> _Call | None:
    """torch.linalg.matrix_exp in ``dtype`` (None without torch)."""
    if torch is None:
        return None
    t = torch.from_numpy(x32).to(_torch_device()).to(getattr(torch, dtype))
    matrix_exp = torch.linalg.matrix_exp
    return (lambda: matrix_exp(t).float()), _torch_sync


def run_low_precision(sizes: Sequence[int], norms: Sequence[float], repeats: int, seed: int):
    """bfloat16 / float16 beside float32: time and error of jexpm and torch.

    Each input is a batch of ``_LOW_BATCH`` random matrices, rounded to the dtype;
    errors are against scipy in float64 on the rounded input. A torch call that
    raises is reported as "error".

    Args:
      sizes: matrix sizes n.
      norms: 1-norms of the members.
      repeats: timed calls per method.
      seed: random seed.

    Returns:
      The markdown section.
    """
    import scipy.linalg
    from tqdm import tqdm

    expm = jax.jit(jexpm.expm)
    rows = []
    cases = [(n, norm, d) for n in sizes for norm in norms for d in _LOW_DTYPES]
    for n, norm, dtype in tqdm(cases, desc="low precision", unit="case"):
        x32 = random_with_norm(
            np.random.default_rng([seed, n]), (_LOW_BATCH, n, n), norm, "float32"
        )
        x = jnp.asarray(x32).astype(dtype)
        rounded = np.asarray(x.astype(jnp.float32), np.float64)
        ref = np.stack([scipy.linalg.expm(m) for m in rounded])
        calls = {"jexpm": (functools.partial(expm, x), jax.block_until_ready)}
        results: dict[str, tuple[float | None, Any]] = dict(median_times(calls, repeats))
        torch_call = _torch_low_call(rounded.astype(np.float32), dtype)
        torch_failed = False
        if torch_call is not None:
            try:
                results |= median_times({"torch": torch_call}, repeats)
            except RuntimeError:
                torch_failed = True
        cells = []
        for name in ("jexpm", "torch"):
            t, out = results.get(name, (None, None))
            err = None if out is None else rel_err(np.asarray(_to_numpy(out), np.float64), ref)
            cells += [_ms(t), _fmt(err, ".1e")]
        if torch_failed:
            cells[2:] = ["error", "error"]
        rows.append([f"{_LOW_BATCH}×{n}×{n}", f"{norm:g}", dtype, *cells])
    headers = ["batch", "‖A‖₁", "dtype", "jexpm ms", "err jexpm", "torch ms", "err torch"]
    return (
        "### Low precision (median ms per call; error vs float64 on the rounded input)\n\n"
        + markdown_table(headers, rows)
    )


# --------------------------------------------------------------------- products mode


def run_products(sizes: Sequence[int], dtypes: Sequence[str], repeats: int, seed: int) -> str:
    """Times of a whole ``jexpm.expm`` with each product formulation, fastest per n.

    The products are timed where they are used, in a jitted float ``jexpm.expm`` at
    1-norm 2 on a batch of about 65536·36 elements, since XLA fuses them with the
    polynomial's linear combinations (isolated products rank the forms differently).
    Each form is compiled ahead of time under
    :func:`jexpm._products.forced_formulation`, then all are timed round-robin.

    Args:
      sizes: matrix sizes n.
      dtypes: dtypes to run.
      repeats: timed calls per formulation.
      seed: random seed.

    Returns:
      The markdown section: a table per dtype and the largest n at which each
      formulation was fastest.
    """
    from tqdm import tqdm

    forms = list(_products.FORMS)
    bar = tqdm(total=len(sizes) * len(dtypes), desc="products", unit="size")
    sections = []
    for dtype in dtypes:
        rows, largest = [], {}
        for n in sizes:
            bar.set_postfix_str(f"{dtype} n={n}")
            batch = max(1, round(_PRODUCT_ELEMENTS / n**2))
            rng = np.random.default_rng([seed, n])
            a = jnp.asarray(random_with_norm(rng, (batch, n, n), 2.0, dtype))
            compiled = {}
            for form in forms:
                with _products.forced_formulation(form):
                    compiled[form] = jax.jit(jexpm.expm).lower(a).compile()
            calls = {
                f: (functools.partial(c, a), jax.block_until_ready) for f, c in compiled.items()
            }
            times = {f: t for f, (t, _) in median_times(calls, repeats).items()}
            fastest = min(times, key=times.__getitem__)
            largest[fastest] = n
            default = _products.formulation(n, np.dtype(dtype).itemsize)
            rows.append([n, batch, *(_ms(times[f]) for f in forms), fastest, default])
            bar.update()
        headers = ["n", "batch", *(f"{f} ms" for f in forms), "fastest", "used"]
        summary = ", ".join(f"{f} up to n={m}" for f, m in largest.items())
        sections.append(
            f"### Product forms inside expm, {dtype} (median ms per expm call)\n\n"
            f"{markdown_table(headers, rows)}\n\nLargest n at which each form was fastest: "
            f"{summary}. Current rule on the CPU: broadcast for n ≤ "
            f"{_products._CPU_BROADCAST_MAX_N[np.dtype(dtype).itemsize]}, dot otherwise."
        )
    bar.close()
    return "\n\n".join(sections)


# ------------------------------------------------------------------------------ driver


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_header(title: str, argv: Sequence[str]) -> str:
    """Markdown header naming the machine, the software versions, date and command.

    Args:
      title: the heading.
      argv: the command-line arguments of the run (without the program name).

    Returns:
      The heading and a bullet list.
    """
    import jaxlib

    device = jax.devices()[0]
    facts = {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores",
        "jax / jaxlib": f"{jax.__version__} / {jaxlib.__version__}",
        "backend": f"{jax.default_backend()} ({device.device_kind}, "
        f"{jax.device_count()} device(s))",
        "torch": (
            f"{torch.__version__} ({_torch_device()}, {torch.get_num_threads()} threads)"
            if torch is not None
            else "not installed"
        ),
        "jexpm": jexpm.__version__,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join(["python", "-m", "jexpm.bench", *argv]),
    }
    lines = "\n".join(f"- {k}: {v}" for k, v in facts.items())
    return f"## {title}\n\n{lines}"


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jexpm.bench",
        description=(
            "Benchmark jexpm.expm (opt15, ps, baseline, vmap) against "
            "jax.scipy.linalg.expm and torch.linalg.matrix_exp, or (--products) the "
            "product formulations of jexpm._products. Workloads: "
            + "; ".join(w.label for w in WORKLOADS.values())
            + "."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small subset (workloads {','.join(_QUICK_WORKLOADS)}, norms "
        f"{','.join(map(str, _QUICK_NORMS))}, one gradient case) with 3 repeats",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64", "both"),
        default="both",
        help="dtypes of the main tables and --products (default both); the gradient "
        "section is always float32",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown output file (default benchmarks/results-<backend>.md, "
        "benchmarks/products-<backend>.md with --products; -quick is appended to "
        "<backend> with --quick)",
    )
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 7)")
    parser.add_argument(
        "--workloads",
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default all)",
    )
    parser.add_argument(
        "--norms",
        help=f"comma-separated 1-norms (default {','.join(map(str, _NORMS))})",
    )
    parser.add_argument(
        "--products",
        action="store_true",
        help="time expm with each product form of jexpm._products for n = 2..64 instead",
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
        unknown = sorted(set(keys) - set(WORKLOADS))
        if unknown or not keys:
            parser.error(f"--workloads: unknown {unknown}; choose from {','.join(WORKLOADS)}")
        args.workloads = keys
    if args.norms is not None:
        args.norms = [float(v) for v in args.norms.split(",")]
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m jexpm.bench``).

    Args:
      argv: command-line arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse_args(argv)
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    if "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    repeats = args.repeats or (3 if args.quick else 7)
    # A --quick run never overwrites the full results.
    stem = f"{jax.default_backend()}-quick" if args.quick else jax.default_backend()
    start = time.perf_counter()

    if args.products:
        sizes = _QUICK_PRODUCT_SIZES if args.quick else range(2, 65)
        title = "jexpm product formulations"
        body = run_products(sizes, dtypes, repeats, args.seed)
        out = args.out or Path(f"benchmarks/products-{stem}.md")
    else:
        keys = args.workloads or (_QUICK_WORKLOADS if args.quick else tuple(WORKLOADS))
        norms = args.norms or (_QUICK_NORMS if args.quick else _NORMS)
        sections = [run_main([WORKLOADS[k] for k in keys], dtypes, norms, repeats, args.seed)]
        grad_cases = [
            (WORKLOADS[k], norm)
            for k, norm in (_QUICK_GRAD_CASES if args.quick else _GRAD_CASES)
            if k in keys
        ]
        if grad_cases and not args.no_grad:
            sections.append(run_gradients(grad_cases, repeats, args.seed))
        if not args.workloads:
            sizes = _QUICK_LOW_SIZES if args.quick else _LOW_SIZES
            low_norms = _QUICK_LOW_NORMS if args.quick else _LOW_NORMS
            sections.append(run_low_precision(sizes, low_norms, repeats, args.seed))
        title = "jexpm benchmarks"
        body = "\n\n".join(sections)
        out = args.out or Path(f"benchmarks/results-{stem}.md")

    elapsed = f"Total benchmark time: {time.perf_counter() - start:.0f} s."
    report = f"{machine_header(title, argv)}\n\n{body}\n\n{elapsed}\n"
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"Written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
