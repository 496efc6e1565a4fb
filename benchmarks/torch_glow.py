"""The authors' PyTorch Glow, timed on the same shapes as ours: their loop and their selector.

arXiv 2512.20777 times a PyTorch Glow whose exponentials are either Xiao and Liu's
eager Taylor loop (``expm_f="old"``: it reads each term's norm back to the host) or
the authors' order-15+ selector with Sastre's formulas (``"new"``). Their code is the
repository dafaronbi/fast-matrix-exponential; this harness imports it from a checkout
named on the command line, and none of it is in this repository. It relies on these
interfaces of that repository:

* ``nets.Model(num_levels, num_flows, conv_type, flow_type, num_blocks,
  hidden_channels, image_size, expm_f, series_f)``, built as their ``main.py`` builds
  it (``conv_type`` and ``flow_type`` ``"matrixexp"``), called as ``model(x,
  init=True)`` (data-dependent initialisation, under ``no_grad``), ``model(x) -> (z,
  log_det)`` and ``model(z, reverse=True)``;
* ``utils.preprocess(image, bits, noise)``: NCHW images in [0, 1] to the model's input;
* ``adamax.Adamax(params, lr=..., polyak=...)``: their optimiser.

Their ``nets``, ``flows`` and ``utils`` need torch, SciPy and NumPy only (their
``main.py`` also imports torchvision and tensorboard, so it is not imported: the loss
is their Gaussian negative log-likelihood, written out in :func:`nll`). Their module
``flows`` has the name of this project's package, so the harness runs in a process of
its own: ``python -m benchmarks.torch_glow --checkout PATH --spec JSON`` prints one
JSON line, the protocol of :func:`benchmarks.isolation.run_isolated`, which
:mod:`benchmarks.paper_gpu` uses.

A row is a (shape, expm): a training step (preprocess with fresh noise, forward, loss,
backward, optimiser step) and sampling ``model(0.7 z, reverse=True)`` under
``no_grad`` per batch size, each the median of ``repeats`` calls after a first call
(reported apart, as our compile times are), with ``torch.cuda.synchronize()`` before
and after every timed call on a GPU. Same data as our rows where the caller passes it,
Adamax at learning rate 1e-3, the temperature of our sampling.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import device
from .glow_speed import Shape, describe_error, out_of_memory

#: Their two exponentials: Xiao and Liu's eager loop and their order-15+ selector.
EXPMS = ("old", "new")
#: What each is, for the report.
LABELS = {"old": "old (Xiao–Liu loop)", "new": "new (Taylor 15+)"}
#: Their modules that this harness imports from the checkout.
MODULES = ("nets", "flows", "utils", "adamax", "new_matrix_exp")
#: A row is not started with less time than this left.
MIN_ROW_SECONDS = 10.0
BITS = 8
TEMPERATURE = 0.7
LEARNING_RATE = 1e-3


def available() -> bool:
    """Whether torch is installed (their code needs it, with SciPy and NumPy)."""
    return importlib.util.find_spec("torch") is not None


def load(checkout: Path) -> types.SimpleNamespace:
    """Import ``Model``, ``preprocess`` and ``Adamax`` from a checkout of their repository.

    Args:
      checkout: the repository's root (it holds ``nets.py``).

    Returns:
      A namespace with ``Model``, ``preprocess`` and ``Adamax``.

    Raises:
      FileNotFoundError: ``checkout`` has no ``nets.py``.
      RuntimeError: a module of the same name (e.g. this project's ``flows``) is
        already imported in this process.
    """
    checkout = Path(checkout).resolve()
    if not (checkout / "nets.py").is_file():
        raise FileNotFoundError(f"no nets.py in {checkout}: not a checkout of their repository")
    for name in MODULES:
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) or ""
        if module is not None and Path(where).resolve().parent != checkout:
            raise RuntimeError(f"a module {name!r} from {where} is already imported")
    sys.path.insert(0, str(checkout))
    # Their modules, found on the checkout's path at run time (not dependencies of ours).
    adamax, nets, utils = (importlib.import_module(name) for name in ("adamax", "nets", "utils"))
    return types.SimpleNamespace(
        Model=nets.Model, preprocess=utils.preprocess, Adamax=adamax.Adamax
    )


def nll(z: Any, log_det: Any, bits: int = BITS) -> Any:
    r"""Mean negative log-likelihood of a batch, their ``compute_loss`` written out.

    .. math:: -\frac{1}{B}\sum_b \Big(\log \mathcal{N}(z_b; 0, I) + \log|\det J_b|
       - D \log(2^{\text{bits}} / 2)\Big)

    with D the pixels times channels: the data are scaled to [-1, 1], a bin of width
    2 / 2^bits.
    """
    flat = z.reshape(z.shape[0], -1)
    log_p = (-0.5 * (flat**2 + math.log(2 * math.pi))).sum(-1)
    dimension = flat.shape[1]
    return -(log_p + log_det - math.log(2.0**bits / 2.0) * dimension).mean()


def _timed(call: Callable[[], Any], sync: Callable[[], None], repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of ``repeats`` more), synchronised."""

    def once() -> float:
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        return time.perf_counter() - t0

    first = once()
    return first, statistics.median(once() for _ in range(repeats))


def measure(
    api: types.SimpleNamespace,
    shape: Shape,
    expm: str,
    net: str,
    repeats: int,
    images: np.ndarray,
    where: str,
) -> dict:
    """Time one (shape, expm) of their Glow: a training step and sampling per batch.

    Args:
      api: :func:`load`'s namespace.
      shape: the workload (levels, steps per level, batches).
      expm: "old" or "new" (:data:`EXPMS`).
      net: "paper" (128 hidden channels, 8 residual blocks) or "small" (32, 1).
      repeats: timed calls per measurement.
      images: uint8 (n, h, w, 3) images, n at least 64 and the training batch.
      where: the torch device, "cuda" or "cpu".

    Returns:
      ``{"first_call_s", "step_s", "sample_first_s": {batch: s}, "sample_s": {batch:
      s}}``, and ``"sample_errors": {batch: why}`` for batches out of memory.
    """
    import torch  # pyright: ignore[reportMissingImports]

    torch.manual_seed(0)
    # Their initialisation draws with SciPy from NumPy's global state.
    np.random.seed(0)  # noqa: NPY002
    hidden, blocks = (128, 8) if net == "paper" else (32, 1)
    h, w, c = shape.image_shape
    model = api.Model(
        shape.levels,
        list(shape.steps_per_level),
        "matrixexp",
        "matrixexp",
        blocks,
        hidden,
        image_size=h,
        expm_f=expm,
        series_f=expm,
    ).to(where)
    data = torch.from_numpy(np.ascontiguousarray(images)).to(where)
    data = data.permute(0, 3, 1, 2).float() / 255.0
    model.eval()
    with torch.no_grad():
        init = data[:64]
        model(api.preprocess(init, BITS, torch.rand_like(init)), init=True)
    optimizer = api.Adamax(model.parameters(), lr=LEARNING_RATE, polyak=0.999)
    batch = data[: shape.train_batch]
    sync = torch.cuda.synchronize if where == "cuda" else (lambda: None)

    def step() -> None:
        x = api.preprocess(batch, BITS, torch.rand_like(batch))
        z, log_det = model(x)
        loss = nll(z, log_det)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    result: dict = {}
    result["first_call_s"], result["step_s"] = _timed(step, sync, repeats)
    model.eval()
    result["sample_first_s"], result["sample_s"], errors = {}, {}, {}
    for n in shape.sample_batches:

        def sample(n: int = n) -> None:
            with torch.no_grad():
                model(TEMPERATURE * torch.randn(n, c, h, w, device=where), reverse=True)

        try:
            first, median = _timed(sample, sync, repeats)
        except Exception as e:  # a batch that does not fit: the others still count
            if not out_of_memory(e):
                raise
            errors[str(n)] = "out of memory"
            if where == "cuda":
                torch.cuda.empty_cache()
            continue
        result["sample_first_s"][str(n)], result["sample_s"][str(n)] = first, median
    if errors:
        result["sample_errors"] = errors
    return result


def run(checkout: Path, spec: dict) -> dict:
    """Every (shape, expm) of ``spec`` in turn, within its time.

    Args:
      checkout: their repository's root (:func:`load`).
      spec: ``{"shapes": [dataclasses.asdict(Shape)], "expms", "net", "repeats",
        "seconds"}`` and optionally ``"min_row"`` (default :data:`MIN_ROW_SECONDS`)
        and ``"images": {shape name: .npy path}`` (uint8 (n, h, w, 3); default:
        uniform random images). No row starts with under ``min_row`` of ``seconds``
        left; one running
        :data:`benchmarks.device.GRACE_SECONDS` past them is stopped.

    Returns:
      ``{"torch", "device", "rows": {shape name: {expm: result}}}``, each result
      :func:`measure`'s with ``wall_s``, or ``{"error": why}``.
    """
    import torch  # pyright: ignore[reportMissingImports]

    start = time.perf_counter()
    deadline = start + spec["seconds"]
    api = load(checkout)
    where = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if where == "cuda" else "CPU"
    rows: dict[str, dict[str, dict]] = {}
    for fields in spec["shapes"]:
        shape = Shape(
            **{
                **fields,
                "image_shape": tuple(fields["image_shape"]),
                "steps_per_level": tuple(fields["steps_per_level"]),
                "sample_batches": tuple(fields["sample_batches"]),
            }
        )
        path = spec.get("images", {}).get(shape.name)
        if path is not None:
            images = np.load(path)
        else:
            n = max(shape.train_batch, 64)
            images = np.random.default_rng(0).integers(0, 256, (n, *shape.image_shape), np.uint8)
        rows[shape.name] = {}
        for expm in spec["expms"]:
            if deadline - time.perf_counter() < spec.get("min_row", MIN_ROW_SECONDS):
                rows[shape.name][expm] = {"error": "skipped: time budget"}
                continue
            t0 = time.perf_counter()
            try:
                with device.alarm(deadline + device.GRACE_SECONDS):
                    result = measure(api, shape, expm, spec["net"], spec["repeats"], images, where)
                result["wall_s"] = time.perf_counter() - t0
            except device.OutOfTime:
                result = {"error": "stopped: past the time budget"}
            except Exception as e:  # one row's failure must not end the others
                result = {"error": describe_error(e)}
            if where == "cuda":
                torch.cuda.empty_cache()
            rows[shape.name][expm] = result
    return {"torch": torch.__version__, "device": f"{where} ({name})", "rows": rows}


def main(argv: Sequence[str] | None = None) -> None:
    """Print :func:`run`'s result as one JSON line.

    Args:
      argv: ``--checkout PATH --spec JSON`` (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.torch_glow",
        description="Time the authors' PyTorch Glow (dafaronbi/fast-matrix-exponential) "
        "from a checkout; prints one JSON line.",
    )
    parser.add_argument("--checkout", type=Path, required=True, help="their repository's root")
    parser.add_argument("--spec", required=True, help="the rows, as JSON (see run)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.checkout, json.loads(args.spec))))


if __name__ == "__main__":
    main()
