"""Per-member orders: a large batch evaluates each member at the order it needs alone.

Where the tuning sets ``sort_min_batch`` (``jexpm/_tuning.py``; off on the CPU, where it
was measured slower on uniform batches, and switched on here), batches of that many
members are ordered by their members' norms, sliced, evaluated member by member at
their own orders and put back in place (``jexpm/_derivatives.py``). Checked against
single-member calls:
``return_info``, values, ``jax.jvp`` and ``jax.grad``; ``vmap`` against the batched
call; and the per-member ``Path`` under ``jit``, which the derivative rules replay.
"""

from __future__ import annotations

import dataclasses
import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jexpm
from jexpm import _approximants, _batching, _derivatives, _options, _tuning
from tests.helpers import EPS, norm1, rel_err

#: A batch just large enough to be ordered under :func:`_ordering`'s tuning.
BATCH = 256
#: The CPU's tuning with ordering switched on (it is off by default: benchmarks.member_orders).
ORDERED = dataclasses.replace(_tuning.CPU, sort_min_batch=BATCH, sort_slices=8)


@pytest.fixture(autouse=True)
def _ordering():
    """Every test here runs with ordering on; traces of the other tuning are dropped."""
    assert jax.default_backend() == "cpu"
    jax.clear_caches()
    with mock.patch.dict(_tuning.TUNING, {"cpu": ORDERED}):
        yield
    jax.clear_caches()


#: Members checked one by one against single calls (each member is compared in bulk).
PICKS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)
FUNCS = {"exp": jexpm.expm, "phi1": jexpm.phi1}


def _mixed(dtype: str, n: int = 5, seed: int = 0) -> np.ndarray:
    """Gaussian members with 1-norms log-uniform over [1e-9, 40], in random order.

    Every order of both methods is needed by some member, order 1 included.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((BATCH, n, n))
    norms = np.exp(rng.uniform(np.log(1e-9), np.log(40.0), BATCH))
    a *= (norms / np.abs(a).sum(axis=-2).max(axis=-1))[:, None, None]
    return a.astype(dtype)


def _ctx(dtype: str):
    return jax.enable_x64(dtype == "float64")


def test_large_batches_are_ordered_and_small_ones_are_not():
    a = jnp.zeros((BATCH, 5, 5), jnp.float32)
    taylor = _approximants.approximant("opt15", "exp")
    assert _derivatives._sorts(taylor, a)
    assert not _derivatives._sorts(taylor, a[:-1])
    assert not _derivatives._sorts(_approximants.approximant("baseline", "exp"), a)
    # The key orders members by norm; the permutation sorts it.
    key = jnp.asarray([5, 0, 63, 5, 2], jnp.int32)
    order = _batching.permutation(key, 6)
    np.testing.assert_array_equal(key[order], np.sort(np.asarray(key)))
    assert sorted(np.asarray(order).tolist()) == list(range(5))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["opt15", "ps"])
@pytest.mark.parametrize("family", FUNCS)
def test_each_member_gets_its_own_order(family, method, dtype):
    f = functools.partial(FUNCS[family], method=method, return_info=True)
    with _ctx(dtype):
        a = jnp.asarray(_mixed(dtype))
        x, info = jax.jit(f)(a)
        orders = set(np.asarray(info.order).tolist())
        assert orders == set(_approximants.approximant(method, family).orders), orders
        single = jax.jit(f)
        for i in range(BATCH):
            xi, info_i = single(a[i])
            assert int(info.order[i]) == int(info_i.order), i
            assert int(info.squarings[i]) == int(info_i.squarings), i
            assert int(info.products[i]) == int(info_i.products), i
            if i in PICKS:
                assert rel_err(x[i], xi) <= 2 * EPS[np.dtype(dtype)], i


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_values_against_scipy(dtype):
    with _ctx(dtype):
        a = _mixed(dtype, seed=1)
        x = jexpm.expm(jnp.asarray(a))
        ref = np.stack([scipy.linalg.expm(m.astype(np.float64)) for m in a])
        # Scaling and squaring's forward error grows with the norm; a member's result
        # landing on another member would be off by O(1).
        for i in range(BATCH):
            bound = 64 * EPS[np.dtype(dtype)] * (1 + norm1(a[i]))
            assert rel_err(x[i], ref[i]) <= bound, (i, norm1(a[i]))


@pytest.mark.parametrize("method", ["opt15", "ps"])
def test_jvp_and_grad_are_those_of_each_member(method):
    with _ctx("float64"):
        a = jnp.asarray(_mixed("float64", seed=2))
        e = jnp.asarray(_mixed("float64", seed=3)) / 40
        w = jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape)

        def f(x):
            return jexpm.expm(x, method=method)

        def loss(x, w):
            return jnp.sum(f(x) * w)

        _, tangent = jax.jit(lambda a, e: jax.jvp(f, (a,), (e,)))(a, e)
        grad = jax.jit(jax.grad(loss))(a, w)
        single_jvp = jax.jit(lambda a, e: jax.jvp(f, (a,), (e,))[1])
        single_grad = jax.jit(jax.grad(loss))
        for i in PICKS:
            assert rel_err(tangent[i], single_jvp(a[i], e[i])) <= 4 * EPS[a.dtype], i
            assert rel_err(grad[i], single_grad(a[i], w[i])) <= 4 * EPS[a.dtype], i


@pytest.mark.parametrize("method", ["opt15", "ps"])
def test_vmap_equals_the_batched_call(method):
    a = jnp.asarray(_mixed("float32", seed=4))
    f = functools.partial(jexpm.expm, method=method, return_info=True)
    x, info = f(a)
    # Mapped over a leading axis of 2: the batch of 2 * BATCH members is ordered as one.
    pair = jnp.stack([a, a[::-1]])
    xv, info_v = jax.jit(jax.vmap(f))(pair)
    np.testing.assert_array_equal(xv[0], x)
    np.testing.assert_array_equal(xv[1], x[::-1])
    for field, value in zip(info_v, info, strict=True):
        np.testing.assert_array_equal(field[0], value)
        np.testing.assert_array_equal(field[1], value[::-1])


def test_the_path_lands_on_its_member_under_jit():
    # The path that comes back is each member's own, in its original position, and
    # the approximant replays it (what the derivative rules differentiate).
    with _ctx("float64"):
        a = jnp.asarray(_mixed("float64", seed=5))
        approximant = _approximants.approximant("opt15", "exp")
        tol = _options.tolerance(None, a.dtype)

        @jax.jit
        def computed(a):
            x, path, _ = _derivatives.approximate(approximant, tol, None, None, a)
            return x, path, approximant.evaluate(a, path)

        x, path, replayed = computed(a)
        alone = jax.jit(lambda m: approximant.compute(m[None], tol)[1])
        for i in range(BATCH):
            p = alone(a[i])
            assert int(path.index[i]) == int(p.index[0]), i
            assert int(path.squarings[i]) == int(p.squarings[0]), i
        assert len(set(np.asarray(path.index).tolist())) == len(approximant.orders)
        # evaluate scales A before forming its powers, compute after: the same
        # function, rounded differently, and squared up to s times.
        for i in range(BATCH):
            bound = 4 * EPS[a.dtype] * (1 + int(path.squarings[i]))
            assert rel_err(replayed[i], x[i]) <= bound, i


def test_a_batch_below_the_minimum_shares_its_highest_order():
    a = jnp.asarray(_mixed("float32", seed=6)[: BATCH // 2])
    _, info = jexpm.expm(a, return_info=True)
    assert np.all(np.asarray(info.order) == 15)


def test_the_default_cpu_tuning_does_not_order():
    with mock.patch.dict(_tuning.TUNING, {"cpu": _tuning.CPU}):
        taylor = _approximants.approximant("opt15", "exp")
        assert not _derivatives._sorts(taylor, jnp.zeros((1 << 16, 6, 6), jnp.float32))
