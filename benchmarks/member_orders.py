"""``python -m benchmarks.member_orders``: per-member orders in a batch, against a shared one.

With ``sort_min_batch`` (``jexpm/_tuning.py``) set to :data:`MIN_BATCH`, a batch of
that many members or more is ordered by its members' norms, cut into slices that each
need about one order and squaring count, and every member is evaluated at its own
order; without it, a slice shares the highest order any of its members needs and
squares to its largest s. This program times
``jexpm.expm`` and its gradient both ways (the tuning set by patching the backend's
entry, whatever its default), round-robin, and sums ``ExpmInfo.products`` over the
batch, on

* synthetic batches whose members' 1-norms are log-uniform over [0.01, 30];
* batches of one norm (2), where ordering can only cost;
* the coupling matrices of a Glow (the ``default`` training config, CIFAR-10 shape,
  batch 32) after a few Adam steps on random images: one batch per coupling layer, as
  the flow exponentiates them.

The report goes to ``benchmarks/results/member-orders-<backend>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

import jexpm
from jexpm import _tuning

from . import harness

#: (batch, n) of the synthetic inputs: the expm benchmark's workloads (a)-(d).
SHAPES = ((65536, 6), (16384, 12), (4096, 24), (64, 48))
NORM_RANGE = (0.01, 30.0)
HEADERS = [
    "input",
    "products shared",
    "products per member",
    "expm ms shared",
    "expm ms per member",
    "grad ms shared",
    "grad ms per member",
    "expm shared/per member",
    "grad shared/per member",
]


#: The ordering measured: batches of at least this many members, in at least 8 slices.
MIN_BATCH, SLICES = 256, 8


@contextlib.contextmanager
def ordering(min_batch: int) -> Iterator[None]:
    """The default backend's tuning with ``sort_min_batch`` (0: every slice shares one order)."""
    backend = jax.default_backend()
    tuning = dataclasses.replace(
        _tuning.for_backend(backend), sort_min_batch=min_batch, sort_slices=SLICES
    )
    with mock.patch.dict(_tuning.TUNING, {backend: tuning}):
        yield


def mixed_norms(rng: np.random.Generator, batch: int, n: int, dtype: str) -> np.ndarray:
    """Gaussian matrices with 1-norms log-uniform over :data:`NORM_RANGE`."""
    a = rng.standard_normal((batch, n, n))
    low, high = np.log(NORM_RANGE[0]), np.log(NORM_RANGE[1])
    norms = np.exp(rng.uniform(low, high, batch))
    a *= (norms / np.abs(a).sum(axis=-2).max(axis=-1))[:, None, None]
    return a.astype(dtype)


def _products(a):
    return jnp.sum(jexpm.expm(a, return_info=True)[1].products)


def _loss(a, w):
    return jnp.sum(jexpm.expm(a) * w)


def _compiled(a: jax.Array, w: jax.Array) -> tuple[Callable, Callable, Callable]:
    """(expm, products, grad) compiled for ``a`` under the current tuning.

    JAX's caches are cleared first: ``jexpm.expm`` is itself jitted, and its cached
    trace would otherwise carry the other tuning's choice over.
    """
    jax.clear_caches()
    return (
        jax.jit(jexpm.expm).lower(a).compile(),
        jax.jit(_products).lower(a).compile(),
        jax.jit(jax.grad(_loss)).lower(a, w).compile(),
    )


def compare(batches: Sequence[np.ndarray], repeats: int) -> list[float]:
    """[products, expm s, grad s] shared, then the same per member, over ``batches``.

    Each batch is one ``expm`` call; times are medians summed over the batches.
    """
    inputs = [jnp.asarray(b) for b in batches]
    weights = [jnp.cos(jnp.arange(b.size, dtype=b.dtype).reshape(b.shape)) for b in inputs]
    pairs = list(zip(inputs, weights, strict=True))
    with ordering(0):
        shared = [_compiled(a, w) for a, w in pairs]
    with ordering(MIN_BATCH):
        per_member = [_compiled(a, w) for a, w in pairs]
    calls: dict[tuple, harness.Call] = {}
    for label, fns in (("shared", shared), ("member", per_member)):
        for i, ((expm, _, grad), (a, w)) in enumerate(zip(fns, pairs, strict=True)):
            calls[label, "expm", i] = (lambda f=expm, a=a: f(a), jax.block_until_ready)
            calls[label, "grad", i] = (lambda f=grad, a=a, w=w: f(a, w), jax.block_until_ready)
    times = harness.median_times(calls, repeats)
    out = []
    for label, fns in (("shared", shared), ("member", per_member)):
        out.append(float(sum(int(f[1](a)) for f, a in zip(fns, inputs, strict=True))))
        for what in ("expm", "grad"):
            out.append(sum(times[label, what, i][0] for i in range(len(inputs))))
    return out


def _row(label: str, figures: list[float]) -> list[str | None]:
    p0, e0, g0, p1, e1, g1 = figures
    return [
        label,
        f"{p0:.0f}",
        f"{p1:.0f}",
        harness.ms(e0),
        harness.ms(e1),
        harness.ms(g0),
        harness.ms(g1),
        harness.ratio(e0, e1),
        harness.ratio(g0, g1),
    ]


def glow_coupling_matrices(steps: int, seed: int) -> list[np.ndarray]:
    """The generators each coupling layer of the ``default`` Glow exponentiates.

    The model (CIFAR-10 shape, batch 32) takes ``steps`` Adam steps on random 8-bit
    images (no dataset is read), then one forward pass records every batch of
    matrices handed to the exponential, in call order.
    """
    import optax
    from flax import nnx

    import flows
    from flows import configs, train

    config = configs.get_config("default")
    rng = np.random.default_rng(seed)
    shape = (config.batch_size, 32, 32, 3)
    model = train.create_model(config, shape[1:], seed)
    images = [jnp.asarray(rng.integers(0, 256, shape, np.uint8)) for _ in range(steps + 1)]
    model.initialize(flows.dequantize(images[0], jax.random.key(seed)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(config.learning_rate)

    @jax.jit
    def step(params, opt_state, images, key):
        def loss(params):
            return jnp.mean(nnx.merge(graphdef, params, rest).bits_per_dim(images, key))

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    for i in range(steps):
        params, opt_state = step(params, opt_state, images[i + 1], jax.random.key(i))
    model = nnx.merge(graphdef, params, rest)
    recorded: list[np.ndarray] = []

    def recorder(a, tol):
        recorded.append(np.asarray(a))
        return jexpm.expm(a, tol=tol)

    flows.register_exponential("recorder", recorder, replace=True)
    for _, module in nnx.iter_graph(model):
        if isinstance(module, flows.MatrixExpCoupling):
            module.expm_method = "recorder"
    model.bits_per_dim(images[0], jax.random.key(seed))
    return [m.reshape(-1, *m.shape[-2:]) for m in recorded]


def run(repeats: int, seed: int, glow_steps: int) -> harness.Section:
    """The comparison table (see the module docstring)."""
    rows = []
    rng = np.random.default_rng(seed)
    for batch, n in SHAPES:
        a = mixed_norms(rng, batch, n, "float32")
        rows.append(_row(f"{batch}×{n}×{n} mixed norms", compare([a], repeats)))
    for batch, n in SHAPES[:3]:
        a = harness.random_with_norm(rng, (batch, n, n), 2.0, "float32")
        rows.append(_row(f"{batch}×{n}×{n} ‖A‖₁ = 2", compare([a], repeats)))
    glow = glow_coupling_matrices(glow_steps, seed)
    sizes = sorted({m.shape[-1] for m in glow})
    for n in sizes:
        layer = [m for m in glow if m.shape[-1] == n]
        label = f"Glow couplings {len(layer)}×({layer[0].shape[0]}×{n}×{n})"
        rows.append(_row(label, compare(layer, repeats)))
    text = (
        "### Per-member orders against a shared order (float32; summed products, "
        "median ms)\n\n"
        f"{harness.markdown_table(HEADERS, rows)}\n\n"
        f"Mixed norms: log-uniform over {list(NORM_RANGE)}. Glow: the `default` config "
        f"after {glow_steps} Adam steps on random images; one call per coupling layer, "
        "times summed over the layers. grad: of sum(expm(A) * W)."
    )
    return harness.Section(text, harness.records(HEADERS, rows))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (see the module docstring and ``--help``).

    Args:
      argv: command-line arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.member_orders",
        description="Per-member orders in a batch against one shared order.",
    )
    parser.add_argument("--out", type=Path, help="markdown output file")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls (default 7)")
    parser.add_argument("--glow-steps", type=int, default=20, help="Adam steps (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sections = {"member_orders": run(args.repeats, args.seed, args.glow_steps)}
    out = args.out or harness.default_output("member-orders", False)
    title = "jexpm per-member orders"
    harness.finish(out, title, "benchmarks.member_orders", argv, sections, start)


if __name__ == "__main__":
    main()
