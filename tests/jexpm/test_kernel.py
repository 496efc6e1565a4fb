"""The fused GPU kernels (jexpm/_kernel.py), run here in Pallas's interpret mode.

The kernels must choose the same path (order, squarings, triangular band, products)
as the XLA path for the same tolerance and method, and agree with its values and its
derivatives in both directions (L and its transpose) to rounding: every order and
several squarings, float32 and float64 (bfloat16 and float16 work in float32 at their
own tolerance), NaN and Inf members, ``max_squarings``, triangular input, batches that
are not a whole number of tiles, members of different orders in one tile.

The lowering tests read the program lowered for CUDA from this CPU machine (counted by
``benchmarks.gpu_paths.round_trips``, which the device run reports too): where the
kernels cover the size, ``expm``, its ``jvp``, ``grad`` and ``vmap`` hold no
data-dependent ``case`` and no ``while`` (XLA:GPU runs each of those with a host round
trip); for larger sizes the count is pinned so that it cannot grow unnoticed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jexpm
from benchmarks.gpu_paths import round_trips as _round_trips
from benchmarks.gpu_paths import xla_expm
from jexpm import _approximants, _derivatives, _kernel, _options, _tuning
from jexpm._approximants import Path
from tests.helpers import EPS, random_with_norm, rel_err

#: (n, 1-norm): every order of opt15 in float32 and float64, no squaring up to several
#: (``test_the_cases_reach_every_order``).
CASES = ((1, 0.3), (3, 1e-6), (3, 1e-9), (4, 1e-3), (4, 1e-4), (5, 0.03), (6, 0.3), (6, 2.0),
         (5, 30.0), (2, 80.0))  # fmt: skip


def _case(n, norm, dtype):
    rng = np.random.default_rng(n)
    # 37 members: one partial tile (or more than one tile at n <= 2).
    return jnp.asarray(random_with_norm(rng, (37, n, n), norm, dtype))


def _ctx(dtype):
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def _kernel_compute(approximant, tol, upper_triangular, max_squarings, a):
    return jax.jit(
        lambda a: _kernel.compute(
            approximant, tol, upper_triangular, max_squarings, a, interpret=True
        )
    )(a)


def _kernel_frechet(approximant, max_squarings, transposed, a, e, path):
    return jax.jit(
        lambda a, e, path: _kernel.frechet(
            approximant, max_squarings, transposed, a, e, path, interpret=True
        )
    )(a, e, path)


def _xla_frechet(approximant, max_squarings, transposed, a, e, path):
    return _derivatives._frechet_xla(
        a,
        e,
        *path,
        approximant=approximant,
        max_squarings=max_squarings,
        depth=0,
        transposed=transposed,
    )


def _same_path(kernel, xla):
    (_, k_path, k_products), (_, x_path, x_products) = kernel, xla
    for name, k, x in zip(("index", "squarings", "exact_band"), k_path, x_path, strict=True):
        np.testing.assert_array_equal(np.asarray(k), np.asarray(x), err_msg=name)
    np.testing.assert_array_equal(np.asarray(k_products), np.asarray(x_products))


def _close(x, ref, dtype, squarings=0, factor=64):
    """Agreement to rounding, which each squaring can double."""
    factor *= 2 ** min(int(np.max(np.asarray(squarings), initial=0)), 12)
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_array_equal(np.isnan(x), np.isnan(ref))
    keep = np.all(np.isfinite(ref), axis=(-2, -1))
    if keep.any():
        assert rel_err(x[keep], ref[keep]) <= factor * EPS[np.dtype(dtype)]


def _both(method, dtype, a, upper_triangular=None, max_squarings=None, exact_band=True, tol=None):
    approximant = _approximants.approximant(method, "exp", exact_band=exact_band)
    tol = _options.tolerance(tol, a.dtype) if tol is None else tol
    statics = (approximant, tol, upper_triangular, max_squarings)
    kernel = _kernel_compute(*statics, a)
    xla = _derivatives._compute_xla(*statics, a)
    return approximant, kernel, xla


#: Paterson-Stockmeyer's orders are other formulas, not another selection: a few cases.
PS_CASES = ((4, 1e-4), (6, 0.3), (6, 2.0), (5, 30.0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("method", "n", "norm"), [("opt15", *c) for c in CASES] + [("ps", *c) for c in PS_CASES]
)
def test_the_kernel_takes_the_xla_path_and_its_values(method, dtype, n, norm):
    with _ctx(dtype):
        _, kernel, xla = _both(method, dtype, _case(n, norm, dtype))
        _same_path(kernel, xla)
        _close(kernel[0], xla[0], dtype, xla[1].squarings)
        if norm > 10:
            assert int(jnp.min(kernel[1].squarings)) > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_cases_reach_every_order(dtype):
    with _ctx(dtype):
        orders = set()
        for n, norm in CASES:
            _, info = jexpm.expm(_case(n, norm, dtype), return_info=True)
            orders |= set(np.asarray(info.order).tolist())
        assert orders == {1, 2, 4, 8, 15}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_inf_members_and_max_squarings(dtype):
    with _ctx(dtype):
        rng = np.random.default_rng(0)
        a = random_with_norm(rng, (9, 5, 5), 3.0, dtype)
        a[2] *= 10
        a[3, 1, 1], a[5, 0, 4], a[6, 2, 0] = np.nan, np.inf, -np.inf
        a = jnp.asarray(a)
        for max_squarings in (None, 3):
            _, kernel, xla = _both("opt15", dtype, a, max_squarings=max_squarings)
            _same_path(kernel, xla)
            _close(kernel[0], xla[0], dtype, xla[1].squarings)
            nan = np.all(np.isnan(np.asarray(kernel[0])), axis=(-2, -1))
            expected = {3, 5, 6} | ({2} if max_squarings else set())
            assert set(np.flatnonzero(nan).tolist()) == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_finite_member_whose_norm_overflows_is_nan(dtype):
    """Finite entries whose column sum overflows: NaN, as on the XLA path, in both kernels.

    The selection and the XLA path decide finiteness by the 1-norm; the kernels do too.
    """
    with _ctx(dtype):
        rng = np.random.default_rng(1)
        a = random_with_norm(rng, (3, 4, 4), 3.0, dtype)
        a[1, :, 2] = np.finfo(dtype).max / 2
        a = jnp.asarray(a)
        approximant, kernel, xla = _both("opt15", dtype, a)
        _same_path(kernel, xla)
        _close(kernel[0], xla[0], dtype, xla[1].squarings)
        assert np.all(np.isnan(np.asarray(kernel[0][1])))
        e = jnp.asarray(rng.standard_normal(a.shape).astype(dtype))
        for transposed in (False, True):
            got = _kernel_frechet(approximant, None, transposed, a, e, xla[1])
            want = _xla_frechet(approximant, None, transposed, a, e, xla[1])
            _close(got, want, dtype, xla[1].squarings, factor=256)
            assert np.all(np.isnan(np.asarray(got[1])))


@pytest.mark.parametrize("triangular", [None, True])
def test_triangular_input_recomputes_the_band(triangular):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        a = np.triu(rng.standard_normal((5, 4, 4))) * 3
        a[0] = [[1, 1e17, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # Moler's badly scaled
        a = jnp.asarray(a)
        _, kernel, xla = _both("opt15", "float64", a, upper_triangular=triangular)
        _same_path(kernel, xla)
        assert bool(jnp.all(kernel[1].exact_band))
        _close(kernel[0], xla[0], "float64", xla[1].squarings)
        # The exact diagonal: e^1 where the plain squaring of Moler's matrix loses it.
        np.testing.assert_allclose(np.diagonal(np.asarray(kernel[0][0])), np.e, rtol=1e-15)
        # General input (upper_triangular=False) takes no band.
        _, kernel, xla = _both("opt15", "float64", a, exact_band=False)
        _same_path(kernel, xla)
        assert not bool(jnp.any(kernel[1].exact_band))


def test_refined_squarings_and_low_precision_tolerance():
    """A strongly non-normal batch refines s with ||A^8||; bfloat16's tolerance is coarser."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        # Like Moler's [[1, 1e6], [0, 1]], but general: ||A^2|| << ||A||^2.
        a = np.tile(np.array([[1.0, 1e6], [1e-9, 1.0]]), (6, 1, 1))
        a = jnp.asarray(a * rng.uniform(0.5, 1, (6, 1, 1)))
        _, kernel, xla = _both("opt15", "float64", a)
        _same_path(kernel, xla)
        refined = np.asarray(kernel[2]) - 4 - np.asarray(kernel[1].squarings)
        assert np.all(refined == 3)  # the refinement's three products were counted
        _close(kernel[0], xla[0], "float64", xla[1].squarings)
    a = jnp.asarray(random_with_norm(np.random.default_rng(3), (20, 6, 6), 2.0, "float32"))
    _, kernel, xla = _both("opt15", "float32", a, tol=_options.tolerance(None, jnp.bfloat16))
    _same_path(kernel, xla)
    assert int(jnp.max(kernel[1].index)) < 4  # a lower order than float32's
    _close(kernel[0], xla[0], "float32")


@pytest.mark.parametrize(
    ("method", "dtype", "triangular"),
    [
        ("opt15", "float32", False),
        ("opt15", "float64", False),
        ("opt15", "float64", True),
        ("ps", "float32", True),
        ("ps", "float64", False),
    ],
)
def test_frechet_and_its_transpose(method, dtype, triangular):
    """L(A, E) and L*(A, G), members of different orders and squarings in one tile."""
    with _ctx(dtype):
        rng = np.random.default_rng(4)
        norms = np.geomspace(1e-6, 50, 30)
        a = np.stack([random_with_norm(rng, (5, 5), x, dtype) for x in norms])
        if triangular:
            a = np.triu(a)
        a[7, 0, 0] = np.nan
        a = jnp.asarray(a)
        e = jnp.asarray(rng.standard_normal(a.shape).astype(dtype))
        approximant = _approximants.approximant(method, "exp")
        # Each member at its own order, as vmap and by-member paths have it.
        tol = _options.tolerance(None, a.dtype)
        path = jax.vmap(lambda x: _derivatives._compute_xla(approximant, tol, None, None, x)[1])(
            a[:, None]
        )
        path = Path(*(x[:, 0] for x in path))
        assert len(set(np.asarray(path.index).tolist())) >= 4
        assert bool(jnp.any(path.exact_band)) == triangular
        for transposed in (False, True):
            got = _kernel_frechet(approximant, None, transposed, a, e, path)
            want = _xla_frechet(approximant, None, transposed, a, e, path)
            _close(got, want, dtype, path.squarings, factor=256)


def test_covers():
    gpu = _tuning.GPU
    opt15 = _approximants.approximant("opt15", "exp")
    assert _kernel.covers(opt15, jnp.zeros((4, 6, 6)), gpu)
    assert _kernel.covers(_approximants.approximant("ps", "exp"), jnp.zeros((4, 6, 6)), gpu)
    assert not _kernel.covers(opt15, jnp.zeros((4, 6, 6), jnp.complex64), gpu)
    assert not _kernel.covers(opt15, jnp.zeros((4, 48, 48)), gpu)
    assert not _kernel.covers(opt15, jnp.zeros((0, 6, 6)), gpu)
    assert not _kernel.covers(_approximants.approximant("opt15", "phi1"), jnp.zeros((6, 6)), gpu)
    assert not _kernel.covers(_approximants.approximant("baseline", "exp"), jnp.zeros((6, 6)), gpu)
    assert not _kernel.covers(opt15, jnp.zeros((4, 6, 6)), _tuning.CPU)
    assert _kernel.side(6) == 8 and _kernel.side(8) == 8 and _kernel.side(1) == 1


# ---------------------------------------------------------------------------------
# The GPU program, lowered from here

PROGRAMS = {
    "expm": jexpm.expm,
    "expm_general": lambda a: jexpm.expm(a, upper_triangular=False),
    "vmap": jax.vmap(jexpm.expm),
    "jvp": lambda a: jax.jvp(jexpm.expm, (a,), (a,))[1],
    "grad": jax.grad(lambda a: jnp.sum(jexpm.expm(a) ** 2)),
    "vmap_grad": jax.vmap(jax.grad(lambda a: jnp.sum(jexpm.expm(a) ** 2))),
}


def _cuda_text(program, shape, dtype="float32"):
    a = jnp.full(shape, 0.05, dtype)
    return jax.jit(PROGRAMS[program]).trace(a).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.parametrize("program", list(PROGRAMS))
@pytest.mark.parametrize("n", [6, 24])
def test_the_gpu_program_has_no_host_round_trip(program, n):
    text = _cuda_text(program, (16, n, n))
    assert _round_trips(text) == (0, 0)
    assert "xla.gpu.triton" in text


def test_the_cpu_program_has_no_kernel():
    a = jnp.full((16, 6, 6), 0.05, jnp.float32)
    text = jax.jit(PROGRAMS["grad"]).trace(a).lower(lowering_platforms=("cpu",)).as_text()
    assert "triton" not in text


#: Sizes the kernels do not cover keep the XLA path's data-dependent control flow;
#: these are the counts when the kernels landed, which must not grow.
PINNED = {"expm": (8, 2), "jvp": (19, 5), "grad": (24, 5)}


@pytest.mark.parametrize("program", list(PINNED))
def test_round_trips_of_uncovered_sizes_do_not_grow(program):
    cases, whiles = _round_trips(_cuda_text(program, (2, 48, 48)))
    assert cases <= PINNED[program][0] and whiles <= PINNED[program][1]
    if program != "grad":  # complex input keeps the XLA path
        assert _round_trips(_cuda_text(program, (4, 6, 6), "complex64")) != (0, 0)


def test_fused_false_keeps_the_xla_path():
    a = jnp.full((16, 6, 6), 0.05, jnp.float32)
    text = jax.jit(xla_expm).trace(a).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" not in text and _round_trips(text) != (0, 0)


# ---------------------------------------------------------------------------------
# The action's GPU program (jexpm/_action_kernel.py), one vector per matrix

ACTION_PROGRAMS = {
    "action": lambda a, b: jexpm.expm_multiply(a, b),
    "action_block": lambda a, b: jexpm.expm_multiply(a, b[..., None]),
    "action_jvp": lambda a, b: jax.jvp(jexpm.expm_multiply, (a, b), (a, b))[1],
    "action_grad": jax.grad(lambda a, b: jnp.sum(jnp.abs(jexpm.expm_multiply(a, b)) ** 2), (0, 1)),
}


def _action_cuda_text(program, shape, dtype="float32"):
    a = jnp.full(shape, 0.05, dtype)
    b = jnp.ones(shape[:-1], dtype)
    return (
        jax.jit(ACTION_PROGRAMS[program]).trace(a, b).lower(lowering_platforms=("cuda",)).as_text()
    )


@pytest.mark.parametrize("program", list(ACTION_PROGRAMS))
@pytest.mark.parametrize("shape", [(16, 6, 6), (16, 12, 12), (4, 24, 24)])
def test_the_action_gpu_program_has_no_host_round_trip(program, shape):
    text = _action_cuda_text(program, shape)
    assert _round_trips(text) == (0, 0)
    assert "xla.gpu.triton" in text


def test_the_cpu_action_program_has_no_kernel():
    a, b = jnp.full((16, 6, 6), 0.05, jnp.float32), jnp.ones((16, 6), jnp.float32)
    program = jax.jit(ACTION_PROGRAMS["action_grad"])
    assert "triton" not in program.trace(a, b).lower(lowering_platforms=("cpu",)).as_text()


#: The action's counts where the kernels do not reach (n = 48; complex input), when
#: the action kernel landed: they must not grow.
ACTION_PINNED = {
    "action": ((8, 3), (8, 3)),
    "action_jvp": ((13, 4), (13, 6)),
    "action_grad": ((13, 11), (13, 13)),
}


@pytest.mark.parametrize("program", list(ACTION_PINNED))
def test_action_round_trips_of_uncovered_sizes_do_not_grow(program):
    for (cases, whiles), (shape, dtype) in zip(
        ACTION_PINNED[program], (((2, 48, 48), "float32"), ((16, 6, 6), "complex64")), strict=True
    ):
        got = _round_trips(_action_cuda_text(program, shape, dtype))
        assert got[0] <= cases and got[1] <= whiles, (shape, dtype, got)
