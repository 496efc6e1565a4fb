"""The benchmark harness and its programs' machinery (not their timings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import accuracy, harness, product_forms
from benchmarks import products as products_bench


def test_markdown_table_pads_columns_and_dashes_missing_cells():
    table = harness.markdown_table(["a", "bbb"], [[1, None], ["long", 2.5]])
    assert table.splitlines() == [
        "| a    | bbb |",
        "|------|-----|",
        "| 1    | —   |",
        "| long | 2.5 |",
    ]


def test_random_with_norm_has_the_norm_and_rel_err_measures_it():
    rng = np.random.default_rng(0)
    a = harness.random_with_norm(rng, (5, 4, 4), 3.0, "float64")
    np.testing.assert_allclose(np.abs(a).sum(axis=-2).max(axis=-1), 3.0)
    assert harness.rel_err(a, a) == 0.0
    assert harness.rel_err(1.5 * a, a) == pytest.approx(0.5)


def test_mp_expm_of_a_rotation_generator():
    a = np.array([[0.0, 1.0], [-1.0, 0.0]])
    expected = np.array([[np.cos(1), np.sin(1)], [-np.sin(1), np.cos(1)]])
    np.testing.assert_allclose(harness.mp_expm(a), expected, rtol=1e-15)


def test_write_report_writes_markdown_and_json(tmp_path):
    out = tmp_path / "sub" / "r.md"
    sections = {"one": harness.Section("### One\n\ntext", {"x": [1, 2]})}
    report = harness.write_report(out, "Title", {"CPU": "test"}, sections)
    assert out.read_text() == report == "## Title\n\n- CPU: test\n\n### One\n\ntext\n"
    data = json.loads(out.with_suffix(".json").read_text())
    assert data == {"title": "Title", "machine": {"CPU": "test"}, "one": {"x": [1, 2]}}


def test_matrix_set_is_fixed_and_spans_the_orders():
    mats = accuracy.matrix_set()
    again = accuracy.matrix_set()
    assert len(mats) == 64
    assert all(np.array_equal(a, b) for a, b in zip(mats, again, strict=True))
    norms = sorted(float(np.abs(a).sum(axis=0).max()) for a in mats)
    assert norms[0] == pytest.approx(1e-3) and norms[-1] == pytest.approx(10**2.5)


def test_expm_in_form_compiles_each_form_to_the_same_value():
    import jax.numpy as jnp

    a = jnp.asarray(harness.random_with_norm(np.random.default_rng(1), (3, 5, 5), 2.0, "float32"))
    dot = product_forms.expm_in_form("dot", a)(a)
    broadcast = product_forms.expm_in_form("broadcast", a)(a)
    np.testing.assert_allclose(dot, broadcast, rtol=1e-5, atol=1e-6)
    # the forms are really different programs: only one multiplies through dot
    assert " dot(" in product_forms.expm_in_form("dot", a).as_text()
    assert " dot(" not in product_forms.expm_in_form("broadcast", a).as_text()


def test_products_program_writes_its_report(tmp_path, capsys):
    out = tmp_path / "products.md"
    products_bench.main(["--sizes", "4", "--dtype", "float32", "--repeats", "1", "--out", str(out)])
    text = out.read_text()
    assert "- command: python -m benchmarks.products --sizes 4" in text
    assert "| 4 | " in text and "Largest n at which each form was fastest" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert [row["n"] for row in data["products"]["float32"]["rows"]] == [4]
    assert data["total_seconds"] > 0


def test_expm_program_writes_its_report(tmp_path):
    from benchmarks import expm as expm_bench

    out = tmp_path / "expm.md"
    args = ["--workloads", "f", "--norms", "2", "--dtype", "float32", "--repeats", "1"]
    expm_bench.main([*args, "--no-grad", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    (row,) = data["speed"]["float32"]
    assert row["workload"] == "(f) 48×48 in fori_loop×100"
    assert float(row["err opt15"]) < 1e-6 and float(row["err jax.scipy"]) < 1e-5
    assert "gradients" not in data and "low_precision" not in data
    assert "### expm, float32" in out.read_text()


def test_low_precision_errors_match_the_dtypes():
    from benchmarks import low_precision

    section = low_precision.run([8], [2.0], repeats=1, seed=0)
    errors = {row["dtype"]: float(row["err jexpm"]) for row in section.data}
    assert errors["float32"] < 1e-6
    assert 1e-5 < errors["float16"] < 2e-3
    assert 1e-4 < errors["bfloat16"] < 1e-2


def test_expm_multiply_program_writes_its_report(tmp_path):
    from benchmarks import expm_multiply as action_bench

    out = tmp_path / "action.md"
    args = ["--workloads", "d", "--norms", "2", "--ks", "1", "--repeats", "1"]
    action_bench.main([*args, "--scipy-members", "2", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    (row,) = data["speed"]["rows"]
    assert row["workload"] == "(d) 64×48×48" and row["k"] == 1
    assert float(row["err action"]) < 5e-6 and float(row["err expm@b"]) < 5e-6
    assert "Crossover in this run" in out.read_text()
