"""What every benchmark shares: timing, inputs, errors, the machine header and writers.

* :func:`median_times` times calls round-robin after a compiling warm-up call each;
* :func:`random_with_norm`, :func:`rel_err` and :func:`mp_expm` make inputs of a given
  1-norm and measure normwise relative errors against a float64 or mpmath reference;
* :func:`markdown_table` and :class:`Section` hold the results; :func:`write_report`
  writes them as markdown under a :func:`machine_header`, with the same data as JSON
  beside it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

#: Where the committed results live (``benchmarks/results``).
RESULTS = Path(__file__).resolve().parent / "results"
MISSING = "—"

Call = tuple[Callable[[], Any], Callable[[Any], Any]]  # (run once, wait for the result)
_K = TypeVar("_K")


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of a report: its markdown and the same results as JSON-ready data."""

    markdown: str
    data: Any


def median_times(calls: Mapping[_K, Call], repeats: int) -> dict[_K, tuple[float, Any]]:
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
    cells = [[MISSING if c is None else str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def records(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The rows of a table as dicts keyed by the headers (the JSON form of a table)."""
    return [dict(zip(headers, row, strict=True)) for row in rows]


def fmt(value: float | None, spec: str, suffix: str = "") -> str | None:
    """``value`` formatted with ``spec`` plus ``suffix``, or None (a dash in a table)."""
    return None if value is None else format(value, spec) + suffix


def ms(seconds: float | None) -> str | None:
    """Seconds as milliseconds to three significant digits, or None."""
    return fmt(None if seconds is None else seconds * 1e3, ".3g")


def ratio(num: float | None, den: float | None) -> str | None:
    """``num / den`` to two decimals, or None if either is missing."""
    return None if num is None or den is None else fmt(num / den, ".2f")


def random_with_norm(
    rng: np.random.Generator, shape: tuple[int, ...], norm: float, dtype: str
) -> np.ndarray:
    """Gaussian matrices scaled to the given 1-norm per member, rounded to ``dtype``.

    ``dtype`` may be one NumPy lacks, e.g. "bfloat16" (JAX's NumPy dtype for it).
    """
    import jax.numpy as jnp

    a = rng.standard_normal(shape)
    a *= (norm / np.abs(a).sum(axis=-2).max(axis=-1))[..., None, None]
    return a.astype(jnp.dtype(dtype))


def expm_reference(x: np.ndarray) -> np.ndarray | None:
    """``scipy.linalg.expm`` of a (k, n, n) stack in float64; None without SciPy."""
    try:
        import scipy.linalg
    except ImportError:  # optional: the error columns then show dashes
        return None
    return scipy.linalg.expm(np.asarray(x, np.float64))


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-member normwise relative error in the 1-norm, in float64."""
    diff = np.abs(np.asarray(x, np.float64) - ref).sum(axis=-2).max(axis=-1)
    return float(np.max(diff / np.abs(ref).sum(axis=-2).max(axis=-1)))


def mp_expm(a: np.ndarray, dps: int = 50) -> np.ndarray:
    """exp(a) of one real matrix by mpmath at ``dps`` digits, rounded to float64."""
    import mpmath

    with mpmath.workdps(dps):
        e = mpmath.expm(mpmath.matrix(a.tolist()))
        return np.array(e.tolist(), dtype=float)


class _Progress:
    """The part of a tqdm bar the suites use, doing nothing (where tqdm is missing)."""

    def __init__(self, iterable: Iterable[Any] | None = None, **kwargs: Any):
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable or ())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def set_postfix_str(self, text: str) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, or a silent stand-in where tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:  # optional: e.g. on a bare accelerator image
        return _Progress(iterable, **kwargs)
    return tqdm(iterable, **kwargs)


def past(deadline: float | None) -> bool:
    """Whether ``time.perf_counter()`` has passed ``deadline`` (never for None)."""
    return deadline is not None and time.perf_counter() >= deadline


def skipped_note(skipped: Sequence[str]) -> str:
    """A report line naming the cases a time budget left out ("" when none)."""
    if not skipped:
        return ""
    return f"\n\nSkipped for the time budget: {', '.join(skipped)}."


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(command: Sequence[str]) -> dict[str, str]:
    """The machine, the software versions, the date and the command of a run.

    Args:
      command: the command line, e.g. ``["python", "-m", "benchmarks.expm", "--quick"]``.

    Returns:
      Fact name -> value, in the order of the report header.
    """
    import jax
    import jaxlib

    import jexpm

    from . import torch_adapter

    device = jax.devices()[0]
    return {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores",
        "jax / jaxlib": f"{jax.__version__} / {jaxlib.__version__}",
        "backend": f"{jax.default_backend()} ({device.device_kind}, "
        f"{jax.device_count()} device(s))",
        "torch": torch_adapter.describe(),
        "jexpm": jexpm.__version__,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join(command),
    }


def machine_header(title: str, facts: Mapping[str, str]) -> str:
    """A markdown heading and a bullet list of :func:`machine_facts`."""
    lines = "\n".join(f"- {k}: {v}" for k, v in facts.items())
    return f"## {title}\n\n{lines}"


def write_report(
    out: Path, title: str, facts: Mapping[str, str], sections: Mapping[str, Section]
) -> str:
    """Write a run's markdown report to ``out`` and its data to ``out`` with ``.json``.

    Args:
      out: the markdown file; its parent folder is created.
      title: the report's heading.
      facts: :func:`machine_facts` of the run.
      sections: name -> section, in report order.

    Returns:
      The markdown report.
    """
    body = "\n\n".join(s.markdown for s in sections.values())
    report = f"{machine_header(title, facts)}\n\n{body}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    data = {"title": title, "machine": dict(facts)}
    data |= {name: s.data for name, s in sections.items()}
    text = json.dumps(data, indent=1, default=str, ensure_ascii=False)
    out.with_suffix(".json").write_text(text + "\n")
    return report


def default_output(name: str, quick: bool) -> Path:
    """``benchmarks/results/NAME-BACKEND.md``; a ``--quick`` run never overwrites a full one."""
    import jax

    return RESULTS / f"{name}-{jax.default_backend()}{'-quick' if quick else ''}.md"


def finish(
    out: Path, title: str, module: str, argv: Sequence[str], sections: dict[str, Section], start
) -> None:
    """Add the total time, print the report and write it (:func:`write_report`).

    Args:
      out: the markdown file.
      title: the report's heading.
      module: the program, e.g. "benchmarks.expm" (for the command in the header).
      argv: the program's arguments.
      sections: name -> section, in report order.
      start: ``time.perf_counter()`` at the start of the run.
    """
    import sys

    elapsed = time.perf_counter() - start
    sections["total_seconds"] = Section(f"Total benchmark time: {elapsed:.0f} s.", elapsed)
    facts = machine_facts(["python", "-m", module, *argv])
    print(write_report(out, title, facts, sections))
    print(f"Written to {out} and {out.with_suffix('.json')}", file=sys.stderr)
