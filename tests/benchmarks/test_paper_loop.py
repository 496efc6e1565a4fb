"""The paper's eager baseline and the floor report: right values, runnable on tiny input."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import scipy.linalg

from benchmarks import expm_speed, floor, paper_loop
from tests.helpers import enable_x64, random_with_norm, rel_err


def test_paper_loop_matches_scipy_at_every_scale():
    """Norms below 1/2 (no squaring) to 40 (several squarings), a batch and a loop.

    The loop stops once a term's largest row sum is below its absolute threshold 1e-8,
    so its error is about that in the scaled problem, grown by the s squarings by up to
    2^s (2^s <= 4 max(norm, 1) here); measured 3e-10 to 1e-7, not u.
    """
    rng = np.random.default_rng(0)
    with enable_x64():
        for norm in (0.1, 3.0, 40.0):
            a = random_with_norm(rng, (3, 5, 5), norm, np.float64)
            expected = scipy.linalg.expm(a)
            bound = 4 * max(norm, 1) * paper_loop.EPS
            assert rel_err(np.asarray(paper_loop.expm(jnp.asarray(a))), expected) < bound
            assert rel_err(np.asarray(paper_loop.looped(jnp.asarray(a))), expected) < bound


def test_paper_loop_reads_every_term_back_and_stops_at_the_published_threshold(monkeypatch):
    """c I with c = 0.3: no scaling (row sum <= 1/2), terms c^k / k! I while above 1e-8
    (k = 1..7; 0.3^8 / 8! = 1.6e-9 stops it), one host read for the scale and one per
    term formed (t_1..t_8)."""
    reads = []
    original = paper_loop._largest_row_sum
    monkeypatch.setattr(paper_loop, "_largest_row_sum", lambda x: reads.append(1) or original(x))
    c = 0.3
    with enable_x64():
        e = np.asarray(paper_loop.expm(jnp.asarray(c * np.eye(3))))
    expected = sum(c**k / math.factorial(k) for k in range(8))
    np.testing.assert_allclose(e, expected * np.eye(3), rtol=1e-15, atol=1e-15)
    assert len(reads) == 1 + 8


def test_floor_report_on_a_tiny_workload():
    section = floor.run([expm_speed.Workload("a", (8,), 4)], ["float32"], [2.0], 1, 0)
    (row,) = section.data["rows"]
    products, one, lower = (float(row[k]) for k in ("products", "1 product ms", "floor ms"))
    assert products >= 1 and one > 0
    np.testing.assert_allclose(lower, products * one, rtol=0.02)
    assert float(row["opt15/floor"]) > 0 and float(row["jax.scipy/floor"]) > 0
    assert set(section.data["rates"]) == {"float32"}
