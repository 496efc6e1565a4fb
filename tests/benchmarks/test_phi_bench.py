"""The φ benchmark: its modified-squaring prototype is right, and its report is whole."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

import jexpm
from benchmarks import phi
from tests.helpers import enable_x64, random_with_norm, rel_err

#: Errors allowed against scipy's expm of W and against jexpm.phi: 1024 units of
#: roundoff times max(1, ‖A‖₁) (the condition of e^A for these Gaussian matrices grows
#: about like ‖A‖₁). Measured at ‖A‖₁ = 30, n = 4: 8e-13 (float64), 3e-6 (float32).
ULPS = 1024


def test_squaring_relation_of_the_phi_functions():
    """φ_j(2X) = 2^-j [φ_0(X) φ_j(X) + Σ_{i=1..j} φ_i(X)/(j-i)!], on scipy's expm of W."""
    rng = np.random.default_rng(1)
    a = random_with_norm(rng, (3, 5, 5), 2.0)
    k = 4
    p, q = phi.scipy_phi(a, k), phi.scipy_phi(2 * a, k)
    for j in range(k + 1):
        mixed = sum(p[:, i] / math.factorial(j - i) for i in range(1, j + 1))
        assert rel_err((p[:, 0] @ p[:, j] + mixed) / 2**j, q[:, j]) < 1e-13


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_prototype_agrees_with_jexpm_phi_and_scipy(dtype):
    """Norms 0.1 (no squaring), 3 and 30 (5 squarings), so every part of sw_phi runs;
    k = 3, so the recurrence down from φ_3 and the mixing of the squarings run too."""
    k = 3
    rng = np.random.default_rng([k, len(dtype)])
    with enable_x64():
        for norm in (0.1, 3.0, 30.0):
            a = random_with_norm(rng, (4, 4, 4), norm).astype(dtype)
            sw = np.asarray(phi.sw_phi(jnp.asarray(a), k))
            assert sw.shape == (4, k + 1, 4, 4) and sw.dtype == np.dtype(dtype)
            bound = ULPS * float(jnp.finfo(dtype).eps) * max(1.0, norm)
            assert max(phi.phi_errors(sw, phi.scipy_phi(a, k))) < bound
            aug = np.asarray(jexpm.phi(jnp.asarray(a), k), np.float64)
            assert max(phi.phi_errors(sw, aug)) < bound
            expected_s = max(0, math.ceil(math.log2(norm / phi.parameters(k, dtype).theta)))
            assert int(np.max(np.asarray(phi.squarings(jnp.asarray(a), 1.0)))) == expected_s


def test_parameters_meet_their_bound_and_theta_one_wins():
    for dtype in ("float64", "float32"):
        u = 2.0 ** (-53 if dtype == "float64" else -24)
        for k in (1, 2, 3, 5):
            params = phi.parameters(k, dtype)
            assert params.theta == 1.0
            m = params.degree
            for j in range(k + 1):
                assert phi._tail(1.0, m + k - j, j) <= u * phi._lower(1.0, j)
            assert any(
                phi._tail(1.0, m - 1 + k - j, j) > u * phi._lower(1.0, j) for j in range(k + 1)
            )


def test_quick_report_has_its_sections(tmp_path):
    out = tmp_path / "phi.md"
    argv = ["--quick", "--dtypes", "float64", "--sizes", "4", "--ks", "2", "--repeats", "1"]
    phi.main([*argv, "--out", str(out)])
    text = out.read_text()
    for heading in (
        "The prototype's parameters",
        "Time and products, Gaussian matrices",
        "Compile time",
        "Accuracy on harder matrices",
        "Against mpmath (float64)",
    ):
        assert f"### {heading}" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert {"machine", "parameters", "speed", "compile", "hard", "mpmath"} <= set(data)
    speed = data["speed"]["rows"]
    assert [row["‖A‖₁"] for row in speed] == ["0.1", "30"]
    for row in speed:
        bound = ULPS * 2.0**-52 * max(1.0, float(row["‖A‖₁"]))
        assert float(row["S–W err (max j)"]) < bound and float(row["aug err (max j)"]) < bound
        assert float(row["aug ms"]) > 0 and float(row["S–W ms"]) > 0
    assert all(float(row["aug compile s"]) > 0 for row in data["compile"]["rows"])
    for row in data["mpmath"]["rows"]:  # float64 against 50 digits: a few units of roundoff
        for column in ("aug err", "S–W err", "scipy-oracle err"):
            assert max(map(float, row[column].split())) < 1e-14
