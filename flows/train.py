"""Train a matrix-exponential Glow: ``python -m flows.train --config default --workdir DIR``.

The program has the shape of the Flax examples: a thin command-line entry point
(:func:`main`), configurations in :mod:`flows.configs`, data in
:mod:`flows.input_pipeline`, and here

- :class:`TrainState` (step, skipped-batch count, parameters, optimiser state, EMA)
  and :func:`create_train_state`;
- :func:`restore_or_initialize`: the latest checkpoint of the work directory, or a
  fresh state after the data-dependent ActNorm initialisation;
- :func:`train_step`: Adamax with linear warm-up and step decay (optax), Polyak
  averaging (EMA) of the parameters, and a guard that skips a batch whose loss or
  gradient is not finite (parameters, optimiser state and EMA stay as they were; the
  batch is counted); it also returns the (m, s) statistics the exponential layers
  record during the forward pass (:func:`flows.expm_statistics`), so logging them
  costs no extra pass;
- :func:`evaluate`: bits/dim of the EMA parameters over the evaluation batches;
- :func:`train_and_evaluate`: the loop, with periodic actions (metrics and
  statistics, evaluation and samples, checkpoints).

Training is data-parallel over a ``jax.sharding`` mesh of all local devices (the batch
is split, the parameters replicated; XLA inserts the gradient all-reduce). A rerun
with the same work directory resumes from the latest orbax checkpoint and continues
bit-identically (the batch and the dequantisation noise of step k depend only on
(seed, k)). The work directory receives ``metrics.jsonl`` (training and evaluation
bits/dim, learning rate, steps per second), ``expm_stats.jsonl`` (histograms of the
Taylor orders m and squarings s), ``samples_<step>.png`` and ``bits_per_dim.png``.

The program is one module, as in the Flax examples: its parts are short functions
that read top-down, and splitting them over a package would only add imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
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
from flax import nnx, struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import _plotting, _statistics, configs, input_pipeline
from ._backend import compiler_options as compiler_options  # what the programs compile with
from ._glow import Glow, dequantize, to_uint8
from ._options import GlowOptions

# Independent random streams derived from the seed: dequantisation noise of training
# step k is fold_in(fold_in(key(seed), _TRAIN_STREAM), k), and so on.
_TRAIN_STREAM, _EVAL_STREAM, _INIT_STREAM, _SAMPLE_STREAM = range(4)


class TrainState(struct.PyTreeNode):
    """Everything a training run carries from step to step (and checkpoints).

    Attributes:
      step: the number of steps taken.
      skipped: the number of batches skipped by the non-finite guard.
      params: the model's ``nnx.Param`` state.
      opt_state: the optimiser's state.
      ema: the Polyak average of ``params``, used for evaluation and samples.
    """

    step: jax.Array
    skipped: jax.Array
    params: Any
    opt_state: Any
    ema: Any


def create_model(config: configs.Config, image_shape: Sequence[int], seed: int) -> Glow:
    """The Glow a config describes, for images of ``image_shape`` (H, W, C).

    The model is built under ``nnx.jit``: one compiled program draws every initial
    parameter, where building it eagerly compiled a small program per initialiser and
    shape (85 of the 143 programs a run of the ``test`` preset compiled). The compilation
    cache then keeps that one program for the next process, e.g. a resumed run.
    """
    return _build_model(config.model, tuple(image_shape), jax.random.key(seed))


@functools.partial(nnx.jit, static_argnums=(0, 1))
def _build_model(options: GlowOptions, image_shape: tuple[int, ...], key: jax.Array) -> Glow:
    return Glow(image_shape, options, rngs=nnx.Rngs(key))


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


def create_optimizer(config: configs.Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adamax with the config's moments and :func:`learning_rate_schedule`."""
    schedule = learning_rate_schedule(config, steps_per_epoch)
    return optax.adamax(schedule, b1=config.b1, b2=config.b2)


def create_train_state(params, tx: optax.GradientTransformation) -> TrainState:
    """The state at step 0: counters at 0, the optimiser's initial state, EMA = params.

    Args:
      params: the model's ``nnx.Param`` state (``nnx.split(model, nnx.Param)[1]``).
      tx: the optimiser.
    """
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        skipped=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params),
    )


def dequantize_init_batch(images: jax.Array, seed: int) -> jax.Array:
    """The data-dependent initialisation batch: uint8 ``images`` dequantized as in training.

    Args:
      images: uint8 images (N, H, W, C).
      seed: the run's seed; the noise comes from its own stream of it.

    Returns:
      Float images in [-1/2, 1/2] for ``Glow.initialize``.
    """
    return dequantize(images, jax.random.fold_in(jax.random.key(seed), _INIT_STREAM))


def restore_or_initialize(
    checkpoints, model: Glow, tx: optax.GradientTransformation, init_images, seed: int, sharding
) -> TrainState:
    """The latest checkpoint's state, or a fresh one after the ActNorm initialisation.

    Args:
      checkpoints: an orbax ``CheckpointManager``.
      model: the freshly created model (initialised in place when starting afresh).
      tx: the optimiser.
      init_images: ``() -> uint8 images`` for the data-dependent initialisation
        (called only when starting afresh; the same images on every process).
      seed: the run's seed.
      sharding: where the state lives.
    """
    params = nnx.state(model, nnx.Param)
    if checkpoints.latest_step() is not None:
        abstract = jax.eval_shape(lambda p: create_train_state(p, tx), params)
        return _restore(checkpoints, abstract, sharding)
    # Every process initialises the same model from the same images, on its own device.
    model.initialize(dequantize_init_batch(jnp.asarray(init_images()), seed))
    return replicate(create_train_state(nnx.state(model, nnx.Param), tx), sharding)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
    state: TrainState,
    images: jax.Array,
    key: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    ema_decay: float,
    statistics: bool = True,
) -> tuple[TrainState, dict[str, Any]]:
    """One optimisation step on a batch of uint8 images (pure; jit it with the keywords bound).

    :func:`train_and_evaluate` compiles it with the backend's compile options
    (``flows._backend``; docs/design.md, section 9a, item 1).

    Returns:
      The new state and the metrics: ``bits_per_dim`` (NaN for a skipped batch),
      ``finite``, and with ``statistics`` ``expm``, the (m, s) of every exponential
      of the forward pass (:func:`flows.expm_statistics`).
    """

    def loss_fn(params):
        model = nnx.merge(graphdef, params)
        if not statistics:
            return jnp.mean(model.bits_per_dim(images, key)), {}
        forward = nnx.capture(Glow.bits_per_dim, nnx.Intermediate)
        bpd, intermediates = forward(model, images, key)
        return jnp.mean(bpd), _statistics.expm_statistics(intermediates)

    (loss, expm), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema, params)
    finite = jnp.isfinite(loss) & _all_finite(grads)

    def guarded(new, old):  # a non-finite batch leaves everything as it was
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    new_state = state.replace(
        step=state.step + 1,
        skipped=state.skipped + (~finite).astype(jnp.int32),
        params=guarded(params, state.params),
        opt_state=guarded(opt_state, state.opt_state),
        ema=guarded(ema, state.ema),
    )
    metrics = {"bits_per_dim": jnp.where(finite, loss, jnp.nan), "finite": finite, "expm": expm}
    return new_state, metrics


def eval_step(params, images, n_valid, key, *, graphdef: nnx.GraphDef) -> jax.Array:
    """Sum of bits/dim over the first ``n_valid`` rows of a (padded) batch."""
    bpd = nnx.merge(graphdef, params).bits_per_dim(images, key)
    return jnp.sum(jnp.where(jnp.arange(bpd.shape[0]) < n_valid, bpd, 0.0))


def evaluate(
    step_fn: Callable, params, batches: Iterable[tuple[np.ndarray, int]], key, sharding
) -> float | None:
    """Mean bits/dim over ``batches`` of (this process's images, valid rows of the batch).

    Returns None when there are no batches.
    """
    total, count = 0.0, 0
    for images, n_valid in batches:
        total += float(step_fn(params, global_batch(images, sharding), n_valid, key))
        count += n_valid
    return total / count if count else None


def global_batch(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The global batch from every process's rows of it (its share of the data axis)."""
    shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local, shape)


def replicate(tree, sharding: NamedSharding):
    """A pytree, identical on every process, as arrays replicated over ``sharding``'s mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


class _Data:
    """Where the batches come from: a source (deterministic by step) or a user iterator."""

    def __init__(self, config, train_data, eval_data, steps_per_epoch):
        self.config = config
        # This process's share of every batch: (index, count).
        self.shard = (jax.process_index(), jax.process_count())
        if jax.process_count() > 1 and (train_data is not None or eval_data is not None):
            raise ValueError(
                "train_data and eval_data iterators are for one process; with several "
                "processes, train on config.dataset (each process reads its share)"
            )
        if train_data is None:
            self.train = input_pipeline.load(config.dataset, "train", data_dir=config.data_dir)
            self.image_shape = self.train.image_shape
            self.steps_per_epoch = input_pipeline.steps_per_epoch(self.train, config.batch_size)
            self._stream = None
        else:
            stream = iter(train_data)
            first = np.asarray(next(stream))  # checked as the first training batch
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
            self.train,
            self.config.batch_size,
            seed=self.config.seed,
            start_step=start_step,
            shard=self.shard,
        )

    def next_train_batch(self, batches: Iterator[np.ndarray], step: int) -> np.ndarray:
        try:
            images = np.asarray(next(batches))
        except StopIteration:
            raise ValueError(f"train_data ran out of batches at step {step}") from None
        if self.train is None:  # a user's batch enters here; the source's are made right
            _check_batch(images, self.config.batch_size, "train batch")
        return images

    def eval_batches(self) -> Iterator[tuple[np.ndarray, int]]:
        if self.test is not None:
            it = input_pipeline.eval_batches(
                self.test, self.config.eval_batch_size, shard=self.shard
            )
        else:
            it = ((b, len(b)) for b in self.eval or [])
        return itertools.islice(it, self.config.num_eval_batches)


def _check_batch(batch: np.ndarray, batch_size: int, name: str) -> None:
    """The batch's shape; its dtype is :func:`flows.dequantize`'s to check."""
    if batch.ndim != 4 or batch.shape[0] != batch_size:
        raise ValueError(
            f"{name}: expected batches of shape (batch_size={batch_size}, H, W, C), "
            f"got {batch.shape}"
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
    _check_same_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = _Data(config, train_data, eval_data, steps_per_epoch)
    num_steps = config.num_train_steps or math.ceil(config.num_epochs * data.steps_per_epoch)
    replicated, sharded = _data_parallel(config, devices)

    model = create_model(config, data.image_shape, config.seed)
    graphdef = nnx.graphdef(model)
    tx = create_optimizer(config, data.steps_per_epoch)
    checkpoints = _checkpoint_manager(workdir)
    state = restore_or_initialize(checkpoints, model, tx, data.init_batch, config.seed, replicated)
    start = int(state.step)
    if start and jax.process_index() == 0:
        _log(f"resumed from the checkpoint at step {start}")

    options = compiler_options()  # the program's one platform decision
    step_fn = jax.jit(
        functools.partial(train_step, graphdef=graphdef, tx=tx, ema_decay=config.ema_decay),
        in_shardings=(replicated, sharded, replicated),
        out_shardings=(replicated, None),
        donate_argnums=0,
        compiler_options=options,
    )
    eval_fn = jax.jit(
        functools.partial(eval_step, graphdef=graphdef),
        in_shardings=(replicated, sharded, None, None),
        compiler_options=options,
    )
    sample_fn = jax.jit(
        lambda p, k: to_uint8(
            nnx.merge(graphdef, p).sample(k, config.num_samples, config.sample_temperature)
        ),
        in_shardings=(replicated, replicated),
        out_shardings=replicated,
        compiler_options=options,
    )
    base_key = jax.random.key(config.seed)
    train_key = jax.random.fold_in(base_key, _TRAIN_STREAM)
    primary = jax.process_index() == 0  # the one process that writes files and logs
    schedule = learning_rate_schedule(config, data.steps_per_epoch)
    log = _MetricsLog(workdir if primary else None, schedule, state)

    def evaluate_and_sample(step: int) -> None:
        key = jax.random.fold_in(base_key, _EVAL_STREAM)
        bpd = evaluate(eval_fn, state.ema, data.eval_batches(), key, sharded)
        if bpd is None:
            return
        log.evaluation(step, bpd)
        key = jax.random.fold_in(jax.random.fold_in(base_key, _SAMPLE_STREAM), step)
        samples = np.asarray(sample_fn(state.ema, key))
        if primary:
            _plotting.save_grid(workdir / f"samples_{step:07d}.png", samples)

    def due(every: int, done: int) -> bool:
        return done % every == 0 or done == num_steps

    batches = data.train_batches(start)
    bar = _progress(range(start, num_steps), num_steps, start, enabled=progress and primary)
    try:
        for step in bar:
            images = data.next_train_batch(batches, step)
            key = jax.random.fold_in(train_key, step)
            state, metrics = step_fn(state, global_batch(images, sharded), key)
            log.step(metrics)
            done = step + 1
            if due(config.log_every_steps, done):
                log.training(done, state, metrics["expm"])
                bar.set_postfix(bpd=f"{log.last['train_bits_per_dim']:.3f}")
            if due(config.eval_every_steps, done):
                evaluate_and_sample(done)
            if due(config.checkpoint_every_steps, done):
                checkpoints.save(done, args=_save_args(state))
    finally:
        # Also on an interruption: let in-flight checkpoint writes land.
        checkpoints.wait_until_finished()
        checkpoints.close()
    if primary:
        _plot_metrics(workdir / "metrics.jsonl", workdir / "bits_per_dim.png")
    return {
        "step": float(int(state.step)),
        **log.last,
        "skipped_batches": float(int(state.skipped)),
        "seconds_per_step": log.seconds_per_step,
    }


def _data_parallel(config: configs.Config, devices) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded) over a mesh of ``devices`` (default: every process's)."""
    devices = list(devices or jax.devices())
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % len(devices):
            raise ValueError(
                f"{name}={getattr(config, name)} must be a multiple of the number of "
                f"devices ({len(devices)})"
            )
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


class _MetricsLog:
    """metrics.jsonl and expm_stats.jsonl: training rows, evaluation rows, (m, s) histograms.

    Every process keeps the numbers (they are the same everywhere); only the one given a
    ``workdir`` (the primary) writes and logs them.
    """

    def __init__(self, workdir: Path | None, schedule: optax.Schedule, state: TrainState):
        self.workdir = workdir
        self.schedule = schedule
        self.window: list[jax.Array] = []
        self.skipped = int(state.skipped)
        self.tic, self.tic_step = time.perf_counter(), int(state.step)
        self.seconds_per_step = math.nan
        self.last = {"train_bits_per_dim": math.nan, "eval_bits_per_dim": math.nan}

    def _write(self, name: str, row: dict) -> None:
        if self.workdir is not None:
            _append(self.workdir / name, row)

    def step(self, metrics) -> None:
        self.window.append(metrics["bits_per_dim"])

    def training(self, done: int, state: TrainState, expm: dict) -> None:
        """Mean training bits/dim since the last row, rate, skips and the last (m, s)."""
        values = np.asarray(jax.device_get(self.window))
        self.window = []
        finite = values[np.isfinite(values)]
        train_bpd = float(finite.mean()) if finite.size else math.nan
        now = time.perf_counter()
        self.seconds_per_step = (now - self.tic) / max(done - self.tic_step, 1)
        self.tic, self.tic_step = now, done
        skipped = int(state.skipped)
        if skipped > self.skipped and self.workdir is not None:
            _log(f"step {done}: skipped {skipped - self.skipped} non-finite batch(es)")
        self.skipped = skipped
        self._write(
            "metrics.jsonl",
            {
                "step": done,
                "train_bits_per_dim": train_bpd,
                "learning_rate": float(np.asarray(self.schedule(done - 1))),
                "steps_per_second": 1.0 / self.seconds_per_step,
                "skipped_batches": skipped,
            },
        )
        for kind, values in expm.items():
            counts = {name: _statistics.histogram(_to_host(v)) for name, v in values.items()}
            self._write("expm_stats.jsonl", {"step": done, "kind": kind, **counts})
        self.last["train_bits_per_dim"] = train_bpd

    def evaluation(self, step: int, bpd: float) -> None:
        self._write("metrics.jsonl", {"step": step, "eval_bits_per_dim": bpd})
        self.last["eval_bits_per_dim"] = bpd
        if self.workdir is not None:
            _log(f"step {step}: eval bits/dim {bpd:.4f}")


def _to_host(x: jax.Array) -> np.ndarray:
    """All of a (possibly process-spanning) array, on every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _check_same_config(config: configs.Config) -> None:
    """Raise ``ValueError`` on every process unless all processes run the same config."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int64)
    every = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
    differ = [i for i, d in enumerate(every) if d != every[0]]
    if differ:
        raise ValueError(
            f"the {jax.process_count()} processes were given different configs: processes "
            f"{differ} differ from process 0 (this is process {jax.process_index()}); "
            "start every process with the same --config and --set options"
        )


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
        image_shape = input_pipeline.DATASETS[config.dataset].image_shape
    model = create_model(config, image_shape, config.seed)
    checkpoints = _checkpoint_manager(Path(workdir), create=False)
    try:
        if checkpoints.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {Path(workdir) / 'checkpoints'}")
        tx = create_optimizer(config, 1)  # the training state's structure
        params = nnx.state(model, nnx.Param)
        abstract = jax.eval_shape(lambda p: create_train_state(p, tx), params)
        state = _restore(checkpoints, abstract, None)
    finally:
        checkpoints.close()
    nnx.update(model, state.ema if ema else state.params)
    return model


def _checkpoint_manager(workdir: Path, create: bool = True):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


def _save_args(state: TrainState):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(state)


def _restore(checkpoints, abstract: TrainState, sharding) -> TrainState:
    import orbax.checkpoint as ocp

    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract
    )
    return checkpoints.restore(checkpoints.latest_step(), args=ocp.args.StandardRestore(target))


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


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> None:
    """Join JAX's multi-process runtime (``jax.distributed``) before any computation.

    Either ``auto`` (the cluster is detected from its environment: SLURM, Open MPI,
    and the others ``jax.distributed.initialize()`` knows), or all three of
    ``coordinator`` ("host:port" of process 0), ``num_processes`` and ``process_id``.
    On CPUs the processes reduce through gloo collectives.

    Raises:
      ValueError: some but not all of the three, or a process id out of range.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "multi-process training needs all of --coordinator HOST:PORT, "
            "--num-processes N and --process-id I (or --distributed-auto on a cluster)"
        )
    if not (auto or all(given)):
        return
    if all(given) and not (
        num_processes is not None and process_id is not None and 0 <= process_id < num_processes
    ):
        raise ValueError(f"--process-id {process_id} must be in [0, {num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes, process_id)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m flows.train --config NAME --workdir DIR [--set k=v ...]``.

    Several processes (one per host, or several on one machine) train one model
    together when each is started with ``--coordinator HOST:PORT --num-processes N
    --process-id I`` (or ``--distributed-auto`` where the cluster is detected), with
    the same config and a work directory they all see.
    """
    parser = argparse.ArgumentParser(
        prog="python -m flows.train",
        description="Train a Glow with matrix-exponential layers (see flows.configs).",
    )
    parser.add_argument("--config", default="default", choices=tuple(configs.PRESETS))
    parser.add_argument("--workdir", default=None, help="default: runs/<config>")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set expm_method=ps --set batch_size=32",
    )
    group = parser.add_argument_group("multi-process training (jax.distributed)")
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=int, default=None, help="number of processes")
    group.add_argument("--process-id", type=int, default=None, help="this process, 0..N-1")
    group.add_argument(
        "--distributed-auto",
        action="store_true",
        help="detect the processes from the cluster's environment (SLURM, Open MPI, ...)",
    )
    args = parser.parse_args(argv)
    try:
        config = configs.override(configs.get_config(args.config), args.overrides)
        initialize_distributed(
            args.coordinator, args.num_processes, args.process_id, auto=args.distributed_auto
        )
    except ValueError as e:
        parser.error(str(e))
    workdir = args.workdir or f"runs/{args.config}"
    primary = jax.process_index() == 0
    if primary:
        _log(f"config {args.config}: " + json.dumps(dataclasses.asdict(config), default=str))
        _log(f"processes: {jax.process_count()}, devices: {jax.devices()}")
    result = train_and_evaluate(config, workdir)
    if primary:
        _log(f"done: {json.dumps(result)}; outputs in {workdir}")


if __name__ == "__main__":
    main()
