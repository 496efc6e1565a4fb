"""The accelerator path, forced on the CPU, against the CPU path.

On an accelerator every product goes through ``dot`` and large batches are not sliced
for cache (``_tuning.ACCELERATOR``); on the CPU small matrices use the broadcast
product and large batches are cut into cache-sized slices, each with its own order.
Both paths are forced here on the CPU: the accelerator's through the computation's
private options (``product_form="dot"``, and an explicit tuning for the slicing),
and compared with what ``jexpm.expm`` does on the CPU: values, ``return_info``,
``jax.grad`` and ``jax.jvp``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jexpm
from jexpm import _approximants, _batching, _expm, _options, _products, _tuning
from tests.helpers import EPS, random_with_norm, rel_err

DTYPES = ("float32", "float64")
#: (n, 1-norm): broadcast products on the CPU (n = 4, 8 in float32) and dot (n = 16);
#: no squaring, a lower order, and the top order with squarings.
CASES = ((4, 0.5), (8, 2.0), (16, 30.0))


def _ctx(dtype: str):
    return jax.enable_x64(dtype == "float64")


def _sliced_batch(n: int, dtype: str) -> int:
    """A batch the CPU cuts into two cache-sized slices."""
    per_member = n * n * np.dtype(dtype).itemsize
    return 2 * (_tuning.CPU.cache_chunk_bytes // per_member)


def _expm_dot(a, **options):
    """jexpm.expm with every product through ``dot`` (the private static option)."""
    defaults = dict(upper_triangular=None, max_squarings=None, tol=None, method="opt15")
    options = defaults | dict(return_info=False) | options
    return _expm._expm(a, **options, product_form="dot")


@functools.partial(jax.jit, static_argnames="method")
def _accelerator_forward(a, method="opt15"):
    """The forward pass as on an accelerator: dot products, no cache slicing."""
    approximant = _approximants.approximant(method, "exp", "dot")
    compute = functools.partial(
        approximant.compute, tol=_options.tolerance(None, a.dtype), upper_triangular=None
    )
    x, path, products = _batching.in_chunks(compute, a, tuning=_tuning.ACCELERATOR)
    info = jexpm.ExpmInfo(approximant.order(path.index), path.squarings, products)
    return x, info, path


def test_the_two_paths_differ_where_this_file_says():
    # The comparisons below are between different computations.
    a = jnp.zeros((_sliced_batch(8, "float32"), 8, 8), jnp.float32)
    assert _tuning.for_backend("cpu") is _tuning.CPU
    # The GPU keeps the accelerator's unsliced forward pass (its one measured change is
    # the product form); an unmeasured backend gets the accelerator's defaults.
    assert _tuning.for_backend("gpu").cache_chunk_bytes == _tuning.ACCELERATOR.cache_chunk_bytes
    assert _tuning.for_backend("tpu") is _tuning.ACCELERATOR
    assert _batching.chunk_count(a, a.shape[:-2], False) == 2
    assert _batching.chunk_count(a, a.shape[:-2], False, _tuning.ACCELERATOR) == 1
    assert _products.formulation(8, 4) == "broadcast"
    assert _products.formulation(16, 4) == "dot"
    assert " dot(" not in jax.jit(jexpm.expm).lower(a[:2]).as_text()
    lowered = jax.jit(_expm_dot).lower(a[:2]).as_text()
    assert " dot(" in lowered or "dot_general" in lowered


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "norm"), CASES)
def test_values_and_info_match_the_cpu_path(n, norm, dtype):
    with _ctx(dtype):
        rng = np.random.default_rng([n, int(norm * 10)])
        # Every member has the same norm, so every CPU slice takes the same order.
        a = jnp.asarray(random_with_norm(rng, (_sliced_batch(n, dtype), n, n), norm, dtype))
        cpu, cpu_info = jexpm.expm(a, return_info=True)
        acc, acc_info, _ = _accelerator_forward(a)
        dot, dot_info = _expm_dot(a, return_info=True)
        assert acc.dtype == cpu.dtype == dot.dtype == a.dtype
        for info in (acc_info, dot_info):
            for got, want in zip(info, cpu_info, strict=True):
                np.testing.assert_array_equal(got, want)
        if norm < 1 or norm > 8:  # paths without and with squarings
            assert bool(jnp.all(cpu_info.squarings > 0)) == (norm > 8)
        eps = EPS[np.dtype(dtype)]
        # Same path, products in another form: rounding differences only.
        assert rel_err(acc, cpu) <= 16 * eps * max(1.0, norm)
        assert rel_err(dot, cpu) <= 16 * eps * max(1.0, norm)
        np.testing.assert_array_equal(acc, dot)  # slicing never changes a member's value


@pytest.mark.parametrize(("n", "dtype"), [(8, "float32"), (4, "float64")])
def test_unsliced_batches_share_one_order(n, dtype):
    with _ctx(dtype):
        rng = np.random.default_rng(n)
        batch = _sliced_batch(n, dtype)
        # The first CPU slice holds small members, the second large ones.
        norms = np.repeat([0.01, 4.0], batch // 2)
        a_np = random_with_norm(rng, (batch, n, n), 1.0, dtype) * norms[:, None, None]
        a = jnp.asarray(a_np.astype(dtype))
        cpu, cpu_info = jexpm.expm(a, return_info=True)
        acc, acc_info, _ = _accelerator_forward(a)
        top = int(jnp.max(cpu_info.order))
        np.testing.assert_array_equal(acc_info.order, np.full(batch, top))
        # On the CPU the slice of small members took a lower order, and fewer products.
        assert int(jnp.max(cpu_info.order[: batch // 2])) < top
        assert bool(jnp.all(acc_info.products[: batch // 2] > cpu_info.products[: batch // 2]))
        assert bool(jnp.all(acc_info.squarings <= cpu_info.squarings))
        np.testing.assert_array_equal(
            acc_info.products[batch // 2 :], cpu_info.products[batch // 2 :]
        )
        # Both meet the tolerance: they agree to rounding.
        assert rel_err(acc, cpu) <= 16 * EPS[np.dtype(dtype)] * 4.0


@functools.partial(jax.jit, static_argnums=0)
def _evaluation_tangent(approximant, a, e, path):
    """The tangent of ``approximant.evaluate`` at ``a`` along ``e``, its path held fixed."""
    return jax.jvp(lambda x: approximant.evaluate(x, path), (a,), (e,))[1]


@pytest.mark.parametrize(
    ("n", "norm", "dtype"), [(4, 0.5, "float32"), (8, 2.0, "float64"), (16, 30.0, "float32")]
)
def test_derivatives_match_the_cpu_path(n, norm, dtype):
    with _ctx(dtype):
        rng = np.random.default_rng([n, 7])
        # A member's derivative at a given path does not depend on the slicing (the
        # value test checks that the paths agree on sliced batches): a small batch.
        shape = (64, n, n)
        a = jnp.asarray(random_with_norm(rng, shape, norm, dtype))
        e = jnp.asarray(rng.standard_normal(shape).astype(dtype))
        g = jnp.asarray(rng.standard_normal(shape).astype(dtype))
        eps = EPS[np.dtype(dtype)]
        bound = 64 * eps * max(1.0, norm)

        cpu_tangent = jax.jvp(jexpm.expm, (a,), (e,))[1]
        cpu_grad = jax.grad(lambda x: jnp.sum(jexpm.expm(x) * g))(a)

        # The library's derivative rules with every product through dot.
        dot_tangent = jax.jvp(_expm_dot, (a,), (e,))[1]
        dot_grad = jax.grad(lambda x: jnp.sum(_expm_dot(x) * g))(a)
        assert rel_err(dot_tangent, cpu_tangent) <= bound
        assert rel_err(dot_grad, cpu_grad) <= bound

        # The derivative of the unsliced dot computation at its own path: forward mode
        # through the evaluation itself, reverse mode by the rule the library uses. Both
        # under jit, as the library runs them: one compiled program each, where the
        # forward mode's evaluation run op by op compiled each of its loops separately.
        approximant = _approximants.approximant("opt15", "exp", "dot")
        _, _, path = _accelerator_forward(a)
        acc_tangent = _evaluation_tangent(approximant, a, e, path)
        acc_grad = jax.jit(approximant.transpose)(a, g, path)
        assert rel_err(acc_tangent, cpu_tangent) <= bound
        assert rel_err(acc_grad, cpu_grad) <= bound
        # A real check: the gradient is not a scaled copy of the cotangent.
        assert rel_err(cpu_grad, g) > 1e-3
