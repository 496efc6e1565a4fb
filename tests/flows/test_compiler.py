"""The flows' compile options: what they turn off on the CPU, and that results stay the same."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import flows
from flows import _compiler

NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_value_and_grads(x, w):
    def loss(x, w):
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
        return jnp.sum(jnp.tanh(y))

    return jax.value_and_grad(loss, argnums=(0, 1))(x, w)


def test_the_cpu_gets_its_options_and_other_backends_none():
    assert jax.default_backend() == "cpu"
    assert flows.compiler_options() == _compiler.CPU_OPTIONS
    assert flows.compiler_options("cpu") == _compiler.CPU_OPTIONS
    assert flows.compiler_options("gpu") == {} and flows.compiler_options("tpu") == {}
    # Each call returns its own dict: a caller's change cannot leak into the next.
    flows.compiler_options()["xla_cpu_experimental_ynn_fusion_type"] = "changed"
    assert flows.compiler_options() == _compiler.CPU_OPTIONS


def test_an_xla_without_the_option_gets_none(monkeypatch):
    monkeypatch.setattr(_compiler, "CPU_OPTIONS", {"xla_cpu_no_such_option_here": ""})
    _compiler._cpu_options_known.cache_clear()
    try:
        assert flows.compiler_options() == {}
    finally:
        monkeypatch.undo()
        _compiler._cpu_options_known.cache_clear()
    assert flows.compiler_options() == _compiler.CPU_OPTIONS


def test_convolutions_leave_ynnpack_products_stay_and_results_are_the_same():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 8, 8, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 6, 10)) / 8, jnp.float32)
    default = jax.jit(_conv_value_and_grads).lower(x, w).compile()
    tuned = jax.jit(_conv_value_and_grads, compiler_options=flows.compiler_options())
    tuned = tuned.lower(x, w).compile()
    assert "ynn_fusion" not in tuned.as_text()
    (v0, (dx0, dw0)), (v1, (dx1, dw1)) = default(x, w), tuned(x, w)
    for a, b in ((v0, v1), (dx0, dx1), (dw0, dw1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    # Matrix products go where they went without the options.
    a = jnp.asarray(rng.standard_normal((256, 12, 12)), jnp.float32)
    products = [
        jax.jit(lambda a: a @ a, compiler_options=options).lower(a).compile().as_text()
        for options in ({}, flows.compiler_options())
    ]
    assert ("ynn_fusion" in products[0]) == ("ynn_fusion" in products[1])


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_no_compilation_is_spent_off_the_cpu(backend, monkeypatch):
    def fail():
        raise AssertionError("compiled a probe for a backend that needs none")

    monkeypatch.setattr(_compiler, "_cpu_options_known", fail)
    assert flows.compiler_options(backend) == {}
