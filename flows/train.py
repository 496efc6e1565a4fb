"""Train a matrix-exponential Glow: ``python -m flows.train --config default --workdir DIR``.

The program follows the Flax examples: a thin command-line entry point (:func:`main`),
configurations in :mod:`flows.configs`, data in :mod:`flows.input_pipeline`, and
:func:`train_and_evaluate` doing the work:

- Adamax with linear warm-up and step decay (optax), Polyak averaging (EMA) of the
  parameters, used for evaluation and samples;
- data-parallel over a ``jax.sharding`` mesh of all local devices (the batch is split,
  the parameters replicated; XLA inserts the gradient all-reduce);
- a guard that skips a batch whose loss or gradient is not finite, leaving parameters,
  optimiser state and EMA untouched, and counts and logs it;
- orbax checkpoints; a rerun with the same work directory resumes from the latest one
  and continues bit-identically (the batch and the dequantisation noise of step k
  depend only on (seed, k));
- in the work directory: ``metrics.jsonl`` (training and evaluation bits/dim, learning
  rate, steps per second), ``expm_stats.jsonl`` (histograms of the Taylor orders m and
  squarings s the exponentials use), ``samples_<step>.png`` and ``bits_per_dim.png``.

Its parts, for programs that time or vary a step without the loop: :func:`create_model`,
:func:`dequantize_init_batch` (the ActNorm initialisation batch), :func:`initial_state`,
:func:`make_train_step` and :func:`make_eval_step`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jexpm

from . import _diagnostics, _plotting, configs, input_pipeline
from ._glow import Glow, dequantize, to_uint8

State = dict[str, Any]
# Independent random streams derived from the seed: dequantisation noise of training
# step k is fold_in(fold_in(key(seed), _TRAIN_STREAM), k), and so on.
_TRAIN_STREAM, _EVAL_STREAM, _INIT_STREAM, _SAMPLE_STREAM = range(4)


def create_model(config: configs.Config, image_shape: Sequence[int], seed: int) -> Glow:
    """The Glow a config describes, for images of ``image_shape`` (H, W, C)."""
    return Glow(
        tuple(image_shape),
        levels=config.levels,
        steps_per_level=config.steps_per_level,
        hidden_channels=config.hidden_channels,
        residual_blocks=config.residual_blocks,
        coupling=config.coupling,
        low_rank=config.low_rank,
        rank=config.rank,
        method=config.expm_method,
        tol=config.expm_tol,
        rngs=nnx.Rngs(seed),
    )


def learning_rate_schedule(config: configs.Config, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_epochs``, then step decay at ``decay_epochs``."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    boundaries = {
        round(e * steps_per_epoch) - warmup: config.decay_factor for e in config.decay_epochs
    }
    decay = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    if warmup == 0:
        return decay
    ramp = optax.linear_schedule(0.0, config.learning_rate, warmup)
    return optax.join_schedules([ramp, decay], [warmup])


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(graphdef, tx: optax.GradientTransformation, ema_decay: float) -> Callable:
    """A pure ``(state, images, key) -> (state, metrics)`` step (not yet jitted)."""

    def loss_fn(params, images, key):
        return jnp.mean(nnx.merge(graphdef, params).bits_per_dim(images, key))

    def train_step(state: State, images: jax.Array, key: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], images, key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state["ema"], params)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        # The guard: a non-finite batch leaves everything as it was, and is counted.
        new = {"params": params, "opt_state": opt_state, "ema": ema}
        kept = {k: state[k] for k in new}
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, kept)
        new["step"] = state["step"] + 1
        new["skipped"] = state["skipped"] + (~finite).astype(jnp.int32)
        metrics = {"bits_per_dim": jnp.where(finite, loss, jnp.nan), "finite": finite}
        return new, metrics

    return train_step


def make_eval_step(graphdef) -> Callable:
    """``(params, images, n_valid, key) -> sum of bits/dim over the valid rows``."""

    def eval_step(params, images, n_valid, key):
        bpd = nnx.merge(graphdef, params).bits_per_dim(images, key)
        return jnp.sum(jnp.where(jnp.arange(bpd.shape[0]) < n_valid, bpd, 0.0))

    return eval_step


class _Data:
    """Where the batches come from: a source (deterministic by step) or a user iterator."""

    def __init__(self, config, train_data, eval_data, steps_per_epoch):
        self.config = config
        if train_data is None:
            self.train = input_pipeline.load(config.dataset, "train", data_dir=config.data_dir)
            self.image_shape = self.train.image_shape
            self.steps_per_epoch = input_pipeline.steps_per_epoch(self.train, config.batch_size)
            self._stream = None
        else:
            stream = iter(train_data)
            first = np.asarray(next(stream))
            _check_batch(first, config.batch_size, "train_data")
            self.train = None
            self.image_shape = first.shape[1:]
            self._first = first
            self._stream = itertools.chain([first], stream)
            self.steps_per_epoch = steps_per_epoch or config.num_train_steps or 1
        if eval_data is None and train_data is None:
            self.test = input_pipeline.load(config.dataset, "test", data_dir=config.data_dir)
            self.eval = None
        else:
            self.test = None
            self.eval = None if eval_data is None else [np.asarray(b) for b in eval_data]

    def init_batch(self) -> np.ndarray:
        if self.train is None:
            return self._first
        n = min(self.config.init_batch_size, len(self.train))
        rng = np.random.default_rng((self.config.seed, 2**31 - 1))
        return self.train[np.sort(rng.choice(len(self.train), n, replace=False))]

    def train_batches(self, start_step: int) -> Iterator[np.ndarray]:
        if self.train is None:
            assert self._stream is not None
            return self._stream
        return input_pipeline.batches(
            self.train, self.config.batch_size, seed=self.config.seed, start_step=start_step
        )

    def eval_batches(self) -> Iterator[tuple[np.ndarray, int]]:
        if self.test is not None:
            it = input_pipeline.eval_batches(self.test, self.config.eval_batch_size)
        else:
            it = ((b, len(b)) for b in self.eval or [])
        return itertools.islice(it, self.config.num_eval_batches)


def _check_batch(batch: np.ndarray, batch_size: int, name: str) -> None:
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[0] != batch_size:
        raise ValueError(
            f"{name}: expected uint8 batches of shape (batch_size={batch_size}, H, W, C), "
            f"got {batch.dtype} {batch.shape}"
        )


def train_and_evaluate(
    config: configs.Config,
    workdir: str | Path,
    *,
    train_data: Iterable[np.ndarray] | None = None,
    eval_data: Iterable[np.ndarray] | None = None,
    steps_per_epoch: int | None = None,
    devices: Sequence[jax.Device] | None = None,  # pyright: ignore[reportInvalidTypeForm]
    progress: bool = True,
) -> dict[str, float]:
    """Train (or resume), evaluate, checkpoint and write samples; returns final metrics.

    Args:
      config: the run's :class:`flows.configs.Config`.
      workdir: directory for checkpoints, metrics and images; a rerun with the same
        directory resumes from its latest checkpoint.
      train_data: optional plain iterable of uint8 batches (batch_size, H, W, C) used
        instead of ``config.dataset``, as given (no shuffling; a resumed run simply
        continues drawing from it). Its first batch initialises the ActNorms.
      eval_data: optional iterable of uint8 evaluation batches (any batch size; each
        distinct size compiles once). ``None`` with ``train_data`` given: no evaluation.
      steps_per_epoch: epoch length for the warm-up and decay schedule when
        ``train_data`` is given (default: the whole run is one epoch).
      devices: devices for data parallelism (default: all local devices); the batch
        size must be a multiple of their number.
      progress: show a progress bar.

    Returns:
      ``{"step", "train_bits_per_dim", "eval_bits_per_dim", "skipped_batches",
      "seconds_per_step"}`` at the end of the run.

    Raises:
      ValueError: batch sizes that do not split over the devices, bad batches.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = _Data(config, train_data, eval_data, steps_per_epoch)
    num_steps = config.num_train_steps or math.ceil(config.num_epochs * data.steps_per_epoch)

    devices = list(devices or jax.local_devices())
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % len(devices):
            raise ValueError(
                f"{name}={getattr(config, name)} must be a multiple of the number of "
                f"devices ({len(devices)})"
            )
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P("data"))

    model = create_model(config, data.image_shape, config.seed)
    graphdef, params = nnx.split(model, nnx.Param)
    schedule = learning_rate_schedule(config, data.steps_per_epoch)
    tx = optax.adamax(schedule, b1=config.b1, b2=config.b2)
    checkpoints = _checkpoint_manager(workdir)
    abstract = jax.eval_shape(lambda p: initial_state(p, tx), params)
    if checkpoints.latest_step() is not None:
        state = _restore(checkpoints, abstract, replicated)
        start = int(state["step"])
        _log(f"resumed from the checkpoint at step {start}")
    else:
        init = jax.device_put(data.init_batch(), replicated)
        model.initialize(dequantize_init_batch(init, config.seed))
        state = jax.device_put(initial_state(nnx.state(model, nnx.Param), tx), replicated)
        start = 0

    train_step = jax.jit(
        make_train_step(graphdef, tx, config.ema_decay),
        in_shardings=(replicated, sharded, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    eval_step = jax.jit(make_eval_step(graphdef), in_shardings=(replicated, sharded, None, None))
    sample_fn = jax.jit(
        lambda p, k: to_uint8(
            nnx.merge(graphdef, p).sample(k, config.num_samples, config.sample_temperature)
        ),
        in_shardings=(replicated, replicated),
    )
    base_key = jax.random.key(config.seed)
    train_key = jax.random.fold_in(base_key, _TRAIN_STREAM)
    metrics_file = workdir / "metrics.jsonl"

    def evaluate(step: int) -> float | None:
        total, count = 0.0, 0
        key = jax.random.fold_in(base_key, _EVAL_STREAM)
        for images, n_valid in data.eval_batches():
            total += float(eval_step(state["ema"], jax.device_put(images, sharded), n_valid, key))
            count += n_valid
        if not count:
            return None
        bpd = total / count
        _append(metrics_file, {"step": step, "eval_bits_per_dim": bpd})
        key = jax.random.fold_in(jax.random.fold_in(base_key, _SAMPLE_STREAM), step)
        samples = np.asarray(sample_fn(state["ema"], key))
        _plotting.save_grid(workdir / f"samples_{step:07d}.png", samples)
        return bpd

    batches = data.train_batches(start)
    window: list[jax.Array] = []
    last = {"train_bits_per_dim": math.nan, "eval_bits_per_dim": math.nan}
    skipped_logged = int(state["skipped"])
    tic, tic_step, seconds_per_step = time.perf_counter(), start, math.nan
    bar = _progress(range(start, num_steps), num_steps, start, enabled=progress)
    try:
        for step in bar:
            try:
                images = np.asarray(next(batches))
            except StopIteration:
                raise ValueError(f"train_data ran out of batches at step {step}") from None
            _check_batch(images, config.batch_size, "train batch")
            key = jax.random.fold_in(train_key, step)
            state, metrics = train_step(state, jax.device_put(images, sharded), key)
            window.append(metrics["bits_per_dim"])
            done = step + 1
            if done % config.log_every_steps == 0 or done == num_steps:
                bpd_values = np.asarray(jax.device_get(window))
                finite = bpd_values[np.isfinite(bpd_values)]
                train_bpd = float(finite.mean()) if finite.size else math.nan
                window = []
                now = time.perf_counter()
                seconds_per_step = (now - tic) / max(done - tic_step, 1)
                tic, tic_step = now, done
                skipped = int(state["skipped"])
                if skipped > skipped_logged:
                    _log(f"step {done}: skipped {skipped - skipped_logged} non-finite batch(es)")
                    skipped_logged = skipped
                row = {
                    "step": done,
                    "train_bits_per_dim": train_bpd,
                    "learning_rate": float(np.asarray(schedule(step))),
                    "steps_per_second": 1.0 / seconds_per_step,
                    "skipped_batches": skipped,
                }
                _append(metrics_file, row)
                _log_expm_statistics(graphdef, state["params"], images, config, workdir, done)
                last["train_bits_per_dim"] = train_bpd
                bar.set_postfix(bpd=f"{train_bpd:.3f}")
            if done % config.eval_every_steps == 0 or done == num_steps:
                bpd = evaluate(done)
                if bpd is not None:
                    last["eval_bits_per_dim"] = bpd
                    _log(f"step {done}: eval bits/dim {bpd:.4f}")
            if done % config.checkpoint_every_steps == 0 or done == num_steps:
                checkpoints.save(done, args=_save_args(state))
    finally:
        # Also on an interruption: let in-flight checkpoint writes land.
        checkpoints.wait_until_finished()
        checkpoints.close()
    _plot_metrics(metrics_file, workdir / "bits_per_dim.png")
    return {
        "step": float(int(state["step"])),
        **last,
        "skipped_batches": float(int(state["skipped"])),
        "seconds_per_step": seconds_per_step,
    }


def load_model(
    workdir: str | Path,
    config: configs.Config,
    image_shape: Sequence[int] | None = None,
    *,
    ema: bool = True,
) -> Glow:
    """The Glow of the latest checkpoint in ``workdir`` (EMA parameters by default).

    Args:
      workdir: a :func:`train_and_evaluate` work directory.
      config: the run's config (it defines the architecture).
      image_shape: (H, W, C) of the data (default: that of ``config.dataset``).
      ema: load the Polyak-averaged parameters (used for evaluation) rather than
        the raw training ones.

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
    """
    if image_shape is None:
        image_shape = _IMAGE_SHAPES[config.dataset]
    model = create_model(config, image_shape, config.seed)
    _, params = nnx.split(model, nnx.Param)
    checkpoints = _checkpoint_manager(Path(workdir), create=False)
    try:
        if checkpoints.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {Path(workdir) / 'checkpoints'}")
        tx = optax.adamax(learning_rate_schedule(config, 1))  # the training state's structure
        abstract = jax.eval_shape(lambda p: initial_state(p, tx), params)
        state = _restore(checkpoints, abstract, None)
    finally:
        checkpoints.close()
    nnx.update(model, state["ema" if ema else "params"])
    return model


_IMAGE_SHAPES = {
    "default": (32, 32, 3),
    "cifar10": (32, 32, 3),
    "imagenet_resized/32x32": (32, 32, 3),
    "imagenet_resized/64x64": (64, 64, 3),
}


def initial_state(params, tx: optax.GradientTransformation) -> State:
    """The training state at step 0, as :func:`make_train_step` takes it.

    Args:
      params: the model's ``nnx.Param`` state (``nnx.split(model, nnx.Param)[1]``).
      tx: the optimiser.

    Returns:
      ``{"step", "skipped", "params", "opt_state", "ema"}``: counters at 0, the
      parameters, the optimiser's initial state and the Polyak average (a copy of the
      parameters).
    """
    return {
        "step": jnp.zeros((), jnp.int32),
        "skipped": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "ema": jax.tree.map(jnp.copy, params),
    }


def dequantize_init_batch(images: jax.Array, seed: int) -> jax.Array:
    """The data-dependent initialisation batch: uint8 ``images`` dequantized as in training.

    Args:
      images: uint8 images (N, H, W, C).
      seed: the run's seed; the noise comes from its own stream of it.

    Returns:
      Float images in [-1/2, 1/2] for ``Glow.initialize``.
    """
    return dequantize(images, jax.random.fold_in(jax.random.key(seed), _INIT_STREAM))


def _checkpoint_manager(workdir: Path, create: bool = True):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


def _save_args(state: State):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(state)


def _restore(checkpoints, abstract: State, sharding) -> State:
    import orbax.checkpoint as ocp

    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
    )
    return checkpoints.restore(checkpoints.latest_step(), args=ocp.args.StandardRestore(target))


def _log_expm_statistics(graphdef, params, images, config, workdir: Path, step: int) -> None:
    if config.expm_method not in jexpm.METHODS:
        return
    model = nnx.merge(graphdef, params)
    x = dequantize_init_batch(jnp.asarray(images), config.seed)
    stats = _diagnostics.expm_statistics(model, x)
    for kind, values in stats.items():
        row = {
            "step": step,
            "kind": kind,
            "order": _diagnostics.histogram(values["order"]),
            "squarings": _diagnostics.histogram(values["squarings"]),
        }
        _append(workdir / "expm_stats.jsonl", row)


def _plot_metrics(metrics_file: Path, path: Path) -> None:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    curves = {}
    for name in ("train_bits_per_dim", "eval_bits_per_dim"):
        pts = [(r["step"], r[name]) for r in rows if name in r and math.isfinite(r[name])]
        if pts:
            curves[name.replace("_bits_per_dim", "")] = tuple(zip(*pts, strict=True))
    if curves:
        _plotting.plot_curves(path, curves, xlabel="step", ylabel="bits/dim")


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(iterable, total: int, initial: int, *, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, initial=initial, disable=not enabled, desc="train")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m flows.train --config NAME --workdir DIR [--set k=v ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.train",
        description="Train a Glow with matrix-exponential layers (see flows.configs).",
    )
    parser.add_argument("--config", default="default", choices=configs.PRESETS)
    parser.add_argument("--workdir", default=None, help="default: runs/<config>")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set expm_method=ps --set batch_size=32",
    )
    args = parser.parse_args(argv)
    try:
        config = configs.override(configs.get_config(args.config), args.overrides)
    except ValueError as e:
        parser.error(str(e))
    workdir = args.workdir or f"runs/{args.config}"
    _log(f"config {args.config}: " + json.dumps(dataclasses.asdict(config)))
    _log(f"devices: {jax.devices()}")
    result = train_and_evaluate(config, workdir)
    _log(f"done: {json.dumps(result)}; outputs in {workdir}")


if __name__ == "__main__":
    main()
