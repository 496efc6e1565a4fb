"""The dependency rules between the project's packages, read from the source with ``ast``.

* ``jexpm`` is a JAX library: it imports jax and numpy only, never ``flows`` or
  ``benchmarks``, and ``import jexpm`` loads neither flax nor optax.
* ``flows`` builds on jexpm's public API; only ``flows/input_pipeline.py`` imports
  tensorflow_datasets (lazily: ``import flows`` does not load it); the model modules
  never import the trainer (``flows.train``), which sits on top of them.
* ``benchmarks`` uses both packages and is used by neither.
* No package reaches into another's private modules or names, except the uses listed
  in :data:`PRIVATE_IMPORTS`, each with its reason.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jexpm", "flows", "benchmarks")

#: Third-party (and sibling) top-level modules each package may import; the standard
#: library is always allowed.
ALLOWED = {
    "jexpm": {"jax", "jaxlib", "numpy"},
    "flows": {
        "jexpm",
        "jax",
        "numpy",
        "flax",
        "optax",
        "orbax",
        "tqdm",
        "PIL",
        "skimage",
        "matplotlib",
        "tensorflow_datasets",
    },
    "benchmarks": {
        "jexpm",
        "flows",
        "jax",
        "jaxlib",
        "numpy",
        "scipy",
        "mpmath",
        "tqdm",
        "optax",
        "flax",
        "torch",
    },
}

#: (importing file, private module or name of another package) -> why it is allowed.
PRIVATE_IMPORTS = {
    ("flows/_matexp.py", "jexpm._options"): (
        "check_tol: the flow layers reject at construction the tolerances jexpm rejects "
        "at its first call, with jexpm's own rule and message; both packages ship in one "
        "distribution and version, so the rule cannot drift"
    ),
    ("benchmarks/product_forms.py", "jexpm._expm"): (
        "expm_in_form: the product-form benchmark compiles expm with each form, through "
        "the computation's private static option"
    ),
    ("benchmarks/product_forms.py", "jexpm._products"): (
        "the forms it compares and the measured choice it reports"
    ),
    ("benchmarks/floor.py", "jexpm._products"): (
        "the floor is the time of the products expm runs, so it times them in the form "
        "expm chooses for the shape"
    ),
    ("benchmarks/product_forms.py", "jexpm._tuning"): (
        "the product-form benchmark reports the tuning constant it regenerates"
    ),
    ("benchmarks/product_forms.py", "jexpm._batching"): (
        "the slicing benchmark times the forward pass with and without cache slicing by "
        "passing each tuning to in_chunks explicitly, leaving the library's choice alone"
    ),
    ("benchmarks/product_forms.py", "jexpm._approximants"): (
        "the slicing benchmark slices the opt15 approximant's own forward computation"
    ),
    ("benchmarks/product_forms.py", "jexpm._options"): (
        "the slicing benchmark uses expm's default tolerance for the input dtype"
    ),
    ("benchmarks/member_orders.py", "jexpm._tuning"): (
        "the per-member orders benchmark times the shared order by patching the "
        "backend's tuning entry, the constant it measures"
    ),
    ("benchmarks/gpu_paths.py", "jexpm._expm"): (
        "the paths benchmark times the XLA path beside the fused kernels through the "
        "computation's private static option fused=False"
    ),
    ("benchmarks/phi.py", "jexpm._phis"): (
        "the report lists modified squaring's plan per (k, dtype) and the squarings and "
        "products each member ran, which phi does not return"
    ),
    ("benchmarks/training_ms.py", "flows._plotting"): "the trainer's PNG helpers",
    ("benchmarks/accuracy.py", "flows._plotting"): "the trainer's PNG helpers",
}

#: Modules below the trainer: every module of flows but the trainer itself.
MODEL_MODULES = tuple(
    p.relative_to(ROOT).as_posix()
    for p in sorted((ROOT / "flows").glob("*.py"))
    if p.name != "train.py"
)


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module or ``module.name``, line) of every import in ``path``, lazy ones too.

    ``from package import name`` yields ``package.name``, a module or an attribute.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""])
            else:
                base = node.module or ""
            base = base.strip(".")
            if base == "__future__":
                continue
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _private(name: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))


def _private_module_or_name(name: str) -> str:
    """The shortest private prefix of ``name`` (a private module, or a private name)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[: i + 1])
    return name


def violations() -> list[str]:
    """Every broken rule, as ``file:line: message``."""
    stdlib = set(sys.stdlib_module_names)
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        own = rel.split("/")[0]
        for name, line in imports(path):
            top = name.split(".")[0]
            where = f"{rel}:{line}"
            if top in stdlib or top == own:
                continue
            if top not in ALLOWED[own]:
                found.append(f"{where}: {own} must not import {top} ({name})")
                continue
            if top == "tensorflow_datasets" and rel != "flows/input_pipeline.py":
                found.append(f"{where}: only flows/input_pipeline.py imports tensorflow_datasets")
            if top in PACKAGES and _private(name):
                key = (rel, _private_module_or_name(name))
                if key not in PRIVATE_IMPORTS:
                    found.append(f"{where}: private {key[1]} of another package ({name})")
        if own == "flows" and rel in MODEL_MODULES:
            for name, line in imports(path):
                if name == "flows.train" or name.startswith("flows.train."):
                    found.append(f"{rel}:{line}: the model must not import the trainer")
    return found


def test_the_import_rules_hold():
    assert violations() == []


def test_every_allowed_private_import_is_used():
    used = set()
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        used |= {(rel, _private_module_or_name(name)) for name, _ in imports(path)}
    assert set(PRIVATE_IMPORTS) <= used, set(PRIVATE_IMPORTS) - used


def test_the_reader_sees_relative_lazy_and_private_imports(tmp_path, monkeypatch):
    """The rules would catch what they are for (a check of the checker itself)."""
    (tmp_path / "jexpm").mkdir()
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("")
    (tmp_path / "flows" / "train.py").write_text("")
    (tmp_path / "jexpm" / "__init__.py").write_text("from . import _x\n")
    (tmp_path / "jexpm" / "_x.py").write_text("def f():\n    import flows.train\n")
    (tmp_path / "flows" / "_glow.py").write_text(
        "from . import train\nfrom jexpm import _x\nimport tensorflow_datasets\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted(violations()) == [
        "flows/_glow.py:1: the model must not import the trainer",
        "flows/_glow.py:2: private jexpm._x of another package (jexpm._x)",
        "flows/_glow.py:3: only flows/input_pipeline.py imports tensorflow_datasets",
        "jexpm/_x.py:2: jexpm must not import flows (flows.train)",
    ]


def test_no_benchmark_code_or_hooks_in_the_libraries():
    """No code, string or docstring in jexpm or flows mentions a benchmark.

    The one exception is by design: the comments of jexpm/_tuning.py name the command
    that regenerates each measured constant.
    """
    for package in ("jexpm", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            with path.open("rb") as f:
                for token in tokenize.tokenize(f.readline):
                    text = token.string.lower()
                    if token.type == tokenize.COMMENT and rel == "jexpm/_tuning.py":
                        continue
                    assert "bench" not in text, f"{rel}:{token.start[0]}: {token.string}"
                    assert "stand-in" not in text, f"{rel}:{token.start[0]}: {token.string}"


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("jexpm", ("flax", "optax", "flows", "benchmarks", "tensorflow_datasets")),
        ("flows", ("tensorflow_datasets", "tensorflow", "benchmarks", "orbax")),
    ],
)
def test_importing_a_package_leaves_heavier_ones_unloaded(module, absent):
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_version_is_written_once():
    import re
    from importlib import metadata

    import flows
    import jexpm

    pyproject = (ROOT / "pyproject.toml").read_text()
    written = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert written is not None
    assert jexpm.__version__ == flows.__version__ == metadata.version("jexpm") == written[1]
    for package in ("jexpm", "flows"):
        assert (ROOT / package / "py.typed").is_file()
