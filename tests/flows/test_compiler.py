"""The flows' compile options: what they turn off on the CPU, and that results stay the same."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from flows import _backend

NHWC = ("NHWC", "HWIO", "NHWC")


def test_the_cpu_gets_its_options_and_other_backends_none():
    assert jax.default_backend() == "cpu"
    assert _backend.compiler_options() == _backend.CPU.compiler_options
    assert _backend.compiler_options("cpu") == _backend.CPU.compiler_options
    assert _backend.compiler_options("gpu") == {} and _backend.compiler_options("tpu") == {}
    # Each call returns its own dict: a caller's change cannot leak into the next.
    _backend.compiler_options()["xla_cpu_experimental_ynn_fusion_type"] = "changed"
    assert _backend.compiler_options() == _backend.CPU.compiler_options


def test_an_xla_without_the_option_gets_none(monkeypatch):
    unknown = _backend.Tuning({"xla_cpu_no_such_option_here": ""}, True)
    monkeypatch.setitem(_backend.TUNING, "cpu", unknown)  # pyright: ignore[reportArgumentType]
    try:
        assert _backend.compiler_options() == {}
    finally:
        monkeypatch.undo()
    assert _backend.compiler_options() == _backend.CPU.compiler_options


def _biased_conv_value_and_grads(x, w, b):
    def loss(x, w, b):
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
        return jnp.sum(jnp.tanh(y + b))

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(x, w, b)


def _conv_and_its_gradients(x, w):
    y, pullback = jax.vjp(
        lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC), x, w
    )
    return (y, *pullback(jnp.tanh(y)))


def _ynnpack_opcodes(hlo: str) -> set[str]:
    """The operations inside the YNNPACK fusions of a compiled program's HLO text."""
    called = set(re.findall(r"calls=(%[\w.-]+)[^\n]*__ynn_fusion", hlo))
    bodies = re.findall(r"^(%[\w.-]+) \([^\n]*\{\n(.*?)^\}", hlo, re.M | re.S)
    return {
        opcode
        for name, body in bodies
        if name in called
        for opcode in re.findall(r"= \S+ ([a-z][\w-]*)\(", body)
    }


def _compiled_both_ways(f, *args):
    default = jax.jit(f).lower(*args).compile()
    return default, jax.jit(f, compiler_options=_backend.compiler_options()).lower(*args).compile()


def test_convolutions_leave_ynnpack_and_results_are_the_same():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 8, 8, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 6, 10)) / 8, jnp.float32)
    default, tuned = _compiled_both_ways(_conv_and_its_gradients, x, w)
    assert "ynn_fusion" not in tuned.as_text()
    for want, got in zip(default(x, w), tuned(x, w), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # In a gradient with a bias, the convolutions stay out and the bias gradient's sum
    # over batch and pixels goes in.
    x = jnp.asarray(rng.standard_normal((16, 16, 16, 6)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(10), jnp.float32)
    default, tuned = _compiled_both_ways(_biased_conv_value_and_grads, x, w, b)
    ops = _ynnpack_opcodes(tuned.as_text())
    assert "reduce" in ops and "convolution" not in ops, ops
    for want, got in zip(
        jax.tree.leaves(default(x, w, b)), jax.tree.leaves(tuned(x, w, b)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def test_products_and_reductions_stay_in_ynnpack():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((256, 12, 12)), jnp.float32)
    products = _compiled_both_ways(lambda a: a @ a, a)
    assert ("ynn_fusion" in products[0].as_text()) == ("ynn_fusion" in products[1].as_text())
    # A bias gradient's sum over batch and pixels: without YNNPACK, XLA:CPU splits it
    # into a reduce-window and a reduce, several times slower.
    x = jnp.asarray(rng.standard_normal((64, 16, 16, 32)), jnp.float32)
    default, tuned = _compiled_both_ways(lambda x: x.sum((0, 1, 2)), x)
    assert "ynn_fusion" in tuned.as_text() and "reduce-window" not in tuned.as_text()
    np.testing.assert_allclose(np.asarray(tuned(x)), np.asarray(default(x)), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_no_compilation_is_spent_off_the_cpu(backend, monkeypatch):
    def fail(options):
        raise AssertionError("compiled a probe for a backend that needs none")

    monkeypatch.setattr(_backend, "_options_known", fail)
    assert _backend.compiler_options(backend) == {}
