"""The training program: learning, resume, the non-finite guard, devices, data, errors."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flows import configs, input_pipeline, train

ROOT = Path(__file__).resolve().parents[2]
TEST = configs.get_config("test")


def rows(workdir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (workdir / name).read_text().splitlines()]


def params_of(workdir: Path, config=TEST, ema=False):
    model = train.load_model(workdir, config, (32, 32, 3), ema=ema)
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def fixed_batches(n: int, batch_size: int = TEST.batch_size, seed: int = 0) -> list[np.ndarray]:
    source = input_pipeline.load("default", "train")
    stream = input_pipeline.batches(source, batch_size, seed=seed)
    return [next(stream) for _ in range(n)]


def test_tiny_run_learns_and_writes_its_outputs(tmp_path):
    config = dataclasses.replace(
        TEST, num_train_steps=40, log_every_steps=10, eval_every_steps=20, learning_rate=3e-3
    )
    result = train.train_and_evaluate(config, tmp_path, progress=False)
    train_bpd = [r["train_bits_per_dim"] for r in rows(tmp_path) if "train_bits_per_dim" in r]
    eval_bpd = [r["eval_bits_per_dim"] for r in rows(tmp_path) if "eval_bits_per_dim" in r]
    assert len(train_bpd) == 4 and len(eval_bpd) == 2
    assert train_bpd[-1] < train_bpd[0] - 0.3
    assert eval_bpd[-1] < eval_bpd[0]
    assert result["step"] == 40 and result["skipped_batches"] == 0
    assert result["eval_bits_per_dim"] == pytest.approx(eval_bpd[-1])
    for name in ("samples_0000020.png", "samples_0000040.png", "bits_per_dim.png"):
        assert (tmp_path / name).stat().st_size > 100
    stats = rows(tmp_path, "expm_stats.jsonl")
    assert {r["kind"] for r in stats} == {"1x1 conv", "coupling", "coupling action"}
    coupling = [r for r in stats if r["kind"] == "coupling"][-1]
    action = [r for r in stats if r["kind"] == "coupling action"][-1]
    # one (m, s) per pixel matrix of the batch: 8 images x 16x16 pixels of 6x6 matrices,
    # formed, and 8 x 8x8 pixels of 12x12 ones, applied as an action
    assert sum(coupling["order"].values()) == 8 * 16 * 16
    assert set(coupling["order"]) <= {"1", "2", "4", "8", "15"}
    assert sum(action["order"].values()) == sum(action["steps"].values()) == 8 * 8 * 8


def test_resume_after_an_interruption_is_bit_identical(tmp_path):
    batches = fixed_batches(6)
    config = dataclasses.replace(TEST, checkpoint_every_steps=2, eval_every_steps=100)
    # The epoch length of the default data, as in the test below: the schedule (constant
    # over these 6 steps either way) is then that test's, and so is the compiled training
    # step, which the persistent compilation cache then compiles once for both tests.
    source = input_pipeline.load("default", "train")
    run = functools.partial(
        train.train_and_evaluate,
        steps_per_epoch=input_pipeline.steps_per_epoch(source, config.batch_size),
        progress=False,
    )
    run(config, tmp_path / "straight", train_data=iter(batches))

    def dies_after_five():
        yield from batches[:5]
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "resumed", train_data=dies_after_five())
    # step 5 was lost with the process; the checkpoint at step 4 survives
    run(config, tmp_path / "resumed", train_data=iter(batches[4:]))
    for ema in (False, True):
        straight = params_of(tmp_path / "straight", config, ema)
        resumed = params_of(tmp_path / "resumed", config, ema)
        assert all(np.array_equal(a, b) for a, b in zip(straight, resumed, strict=True))


def test_resume_with_the_tfds_style_pipeline_is_bit_identical(tmp_path):
    config = dataclasses.replace(TEST, num_train_steps=4, eval_every_steps=100)
    train.train_and_evaluate(config, tmp_path / "straight", progress=False)
    train.train_and_evaluate(
        dataclasses.replace(config, num_train_steps=2), tmp_path / "resumed", progress=False
    )
    train.train_and_evaluate(config, tmp_path / "resumed", progress=False)
    straight, resumed = params_of(tmp_path / "straight"), params_of(tmp_path / "resumed")
    assert all(np.array_equal(a, b) for a, b in zip(straight, resumed, strict=True))


def test_non_finite_batch_is_skipped_and_logged(tmp_path, monkeypatch, capsys):
    """A batch whose loss is NaN leaves parameters, optimiser state and EMA untouched."""
    from flows import _glow

    original = _glow.Glow.bits_per_dim

    def poisoned(self, images, key):  # a batch starting with a 255-valued pixel gives NaN
        bpd = original(self, images, key)
        return jnp.where(images[0, 0, 0, 0] == 255, jnp.nan, bpd)

    monkeypatch.setattr(_glow.Glow, "bits_per_dim", poisoned)
    good = fixed_batches(2)
    for b in good:
        b[0, 0, 0, 0] = 0
    bad = good[1].copy()
    bad[0, 0, 0, 0] = 255
    config = dataclasses.replace(TEST, num_train_steps=3, log_every_steps=3, eval_every_steps=99)
    # One epoch length for the three runs below: the same schedule, so one compiled step.
    run = functools.partial(train.train_and_evaluate, steps_per_epoch=3, progress=False)
    result = run(config, tmp_path / "guarded", train_data=iter([good[0], bad, good[1]]))
    assert result["skipped_batches"] == 1
    assert "skipped 1 non-finite batch" in capsys.readouterr().err
    assert rows(tmp_path / "guarded")[-1]["skipped_batches"] == 1
    after = params_of(tmp_path / "guarded")
    assert all(bool(np.all(np.isfinite(p))) for p in after)
    # the same as training on the two good batches at steps 0 and 2 with nothing in between
    config1 = dataclasses.replace(config, num_train_steps=1)
    run(config1, tmp_path / "clean", train_data=iter([good[0]]))
    one_step = params_of(tmp_path / "clean")
    guarded_at_2 = dataclasses.replace(config, num_train_steps=2)
    run(guarded_at_2, tmp_path / "two", train_data=iter([good[0], bad]))
    assert all(
        np.array_equal(a, b) for a, b in zip(one_step, params_of(tmp_path / "two"), strict=True)
    )


MULTI_DEVICE = textwrap.dedent(
    """
    import dataclasses, json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from flows import configs, input_pipeline, train

    assert jax.device_count() == 8, jax.devices()
    test = configs.get_config("test")
    config = dataclasses.replace(test, num_train_steps=2, eval_every_steps=100, batch_size=8,
                                 model=dataclasses.replace(test.model, coupling_action=False))
    source = input_pipeline.load("default", "train")
    stream = input_pipeline.batches(source, 8, seed=0)
    batches = [next(stream) for _ in range(2)]
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        workdir = sys.argv[1] + "/" + name
        result = train.train_and_evaluate(config, workdir, train_data=iter(batches),
                                          devices=devices, progress=False)
        model = train.load_model(workdir, config, (32, 32, 3), ema=False)
        leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
        out[name] = {"loss": result["train_bits_per_dim"],
                     "params": [np.asarray(p).ravel().tolist() for p in leaves]}

    # The gradient with the couplings on the action, at a point where no part is zero.
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   coupling_action=True))
    model = train.create_model(config, (32, 32, 3), 0)
    model.initialize(train.dequantize_init_batch(jnp.asarray(batches[0]), 0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda p: p + 0.01 * jnp.sin(jnp.arange(p.size) + 0.5).reshape(p.shape),
                          params)
    key = jax.random.key(0)
    loss = lambda p, x: jnp.mean(nnx.merge(graphdef, p).bits_per_dim(x, key))
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        fn = jax.jit(jax.grad(loss), in_shardings=(rep, shard), out_shardings=rep)
        grads = fn(jax.device_put(params, rep), jax.device_put(batches[0], shard))
        out[name]["action_grads"] = [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)]
    print(json.dumps(out))
    """
)


def test_data_parallel_on_eight_devices_matches_one(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, eight = out["one"], out["eight"]
    assert one["loss"] == pytest.approx(eight["loss"], rel=1e-6)
    # Adamax's first updates are lr * g / |g|: where a gradient entry is near zero, the
    # all-reduce's different summation order can move that entry's update by up to lr.
    # Almost all entries agree to rounding; allow a hundredth of the learning rate.
    for a, b in zip(one["params"], eight["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-2 * TEST.learning_rate)
    flat_one = np.concatenate([np.ravel(p) for p in one["params"]])
    flat_eight = np.concatenate([np.ravel(p) for p in eight["params"]])
    assert np.mean(np.isclose(flat_one, flat_eight, rtol=1e-5, atol=1e-7)) > 0.99
    # the two steps did move the parameters (the comparison is not of two initialisations)
    fresh = train.create_model(TEST, (32, 32, 3), TEST.seed)
    moved = jax.tree.leaves(nnx.state(fresh, nnx.Param))
    assert any(not np.allclose(np.ravel(m), a) for m, a in zip(moved, one["params"], strict=True))
    # With the couplings on the action (jexpm.expm_multiply), the gradients agree to
    # rounding too. (Its loop bounds follow the batch, so the sharded and unsharded
    # programs round differently; two Adamax steps, whose first moves are lr * sign(g),
    # amplify that on near-zero entries, which is why the trajectories above form e^S.)
    for a, b in zip(one["action_grads"], eight["action_grads"], strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.max(np.abs(a)))


def test_batch_size_must_split_over_the_devices(tmp_path):
    config = dataclasses.replace(TEST, batch_size=7)
    with pytest.raises(
        ValueError, match=r"batch_size=7 must be a multiple of the number of devices"
    ):
        train.train_and_evaluate(config, tmp_path, devices=jax.devices() * 2, progress=False)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        configs.Config(dataset="mnist")
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        configs.get_config("huge")
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        configs.override(TEST, ["learning_rate=-1"])
    with pytest.raises(ValueError, match="bad override 'lr=1'"):
        configs.override(TEST, ["lr=1"])
    with pytest.raises(ValueError, match="bad value for batch_size"):
        configs.override(TEST, ["batch_size=many"])
    with pytest.raises(ValueError, match="unknown expm_method 'pade'"):
        configs.override(TEST, ["expm_method=pade"])
    with pytest.raises(ValueError, match="one entry per level"):
        configs.override(TEST, ["steps_per_level=1,2,3"])


def test_override_parses_field_types():
    c = configs.override(
        TEST, ["steps_per_level=3,2", "expm_tol=1e-6", "low_rank=true", "num_eval_batches=none"]
    )
    m = c.model
    assert m.steps_per_level == (3, 2) and m.expm_tol == 1e-6 and m.low_rank is True
    assert c.num_eval_batches is None


def test_paper_presets():
    cifar = configs.get_config("cifar10")
    model = cifar.model
    assert (model.levels, model.steps_per_level, model.hidden_channels) == (3, (8, 4, 2), 128)
    assert (model.residual_blocks, cifar.batch_size, cifar.learning_rate) == (8, 64, 0.01)
    assert (cifar.decay_epochs, cifar.ema_decay, cifar.num_epochs) == ((40.0,), 0.999, 50.0)
    assert configs.get_config("imagenet32").decay_epochs == (20.0, 40.0)
    assert configs.get_config("imagenet64").model.residual_blocks == 10


def test_learning_rate_schedule_warms_up_then_halves():
    config = dataclasses.replace(TEST, learning_rate=0.01, warmup_epochs=1.0, decay_epochs=(3.0,))
    schedule = train.learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.005)
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(29)) == pytest.approx(0.01)
    assert float(schedule(30)) == pytest.approx(0.005)


def test_command_line_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        train.main(["--config", "test", "--set", "batch_size=zero"])
    assert "bad value for batch_size" in capsys.readouterr().err
