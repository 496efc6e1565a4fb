"""The documentation site's sources: its examples run, and nothing public is left out.

* Every ```` ```python ```` block of the guides, of getting started, of the site's front
  page and of the README runs: each page's blocks in order, in one namespace (a block
  that must not run is written as a ``{code-block}`` directive instead).
* Every public name of ``jexpm``, ``flows`` and the training modules has a page in the
  API reference (``docs/api/*.md``).
* Every file of ``benchmarks/results/`` is included by a page of the site.

The site itself is built, with warnings as errors, by ``.ci/run`` (``docs/about.md``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import flows
import jexpm
from flows import input_pipeline

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES_WITH_EXAMPLES = sorted(
    [ROOT / "README.md", DOCS / "index.md", DOCS / "getting_started.md", *DOCS.glob("guides/*.md")]
)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text())


def test_the_guides_have_examples():
    assert all(_blocks(DOCS / "guides" / f"{name}.md") for name in ("migrating", "flows"))


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES_WITH_EXAMPLES if _blocks(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_python_blocks_run(page: Path):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for index, block in enumerate(_blocks(page)):
        code = compile(block, f"{page.relative_to(ROOT)}[python block {index}]", "exec")
        exec(code, namespace)


def _documented_names() -> set[str]:
    """The names listed under the autosummary directives of the API pages, qualified."""
    names = set()
    for page in sorted((DOCS / "api").glob("*.md")):
        module = None
        for line in page.read_text().splitlines():
            if match := re.match(r"\.\. currentmodule:: (\S+)", line.strip()):
                module = match.group(1)
            elif re.fullmatch(r"   [A-Za-z_][\w.]*", line) and module is not None:
                names.add(f"{module}.{line.strip()}")
    return names


def _public_functions_and_classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.ClassDef)
    return [node.name for node in tree.body if isinstance(node, kinds) and node.name[0] != "_"]


def test_every_public_name_has_an_api_page():
    expected = {f"jexpm.{name}" for name in jexpm.__all__}
    expected |= {f"flows.{name}" for name in flows.__all__}
    expected |= {f"flows.input_pipeline.{name}" for name in input_pipeline.__all__}
    for module in ("configs", "train"):
        names = _public_functions_and_classes(ROOT / "flows" / f"{module}.py")
        expected |= {f"flows.{module}.{name}" for name in names}
    expected.add("flows.configs.PRESETS")
    missing = expected - _documented_names()
    assert not missing, f"no API page for {sorted(missing)}: add them to docs/api/*.md"


def test_every_results_file_is_on_the_site():
    included = set()
    for page in DOCS.rglob("*.md"):
        pattern = r"```\{include\} \.\./\.\./benchmarks/results/(\S+)"
        included |= set(re.findall(pattern, page.read_text()))
    results = {path.name for path in (ROOT / "benchmarks" / "results").glob("*.md")}
    assert results - included == set(), "include these results files in docs/results/"
