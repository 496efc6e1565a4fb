"""Sphinx configuration of the jexpm documentation site.

Build from a checkout with ``python -m sphinx -W --keep-going -n -b html docs build/docs``
(after ``pip install -e ".[docs]"``); ``docs/about.md`` explains the choices made here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout's packages, installed or not

import jexpm  # noqa: E402

logger = logging.getLogger("jexpm.docs")

project = "jexpm"
author = "The jexpm authors"
copyright = "The jexpm authors"
release = version = jexpm.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]

root_doc = "index"
exclude_patterns = ["_build", "check_links.py", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: the guides are Markdown; notebooks are rendered, never executed, by the build.
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True

# The API reference: one generated page per public name, from the docstrings.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: no second entry beside autodoc's
napoleon_custom_sections = [("References", "notes_style")]

# Warnings are errors in CI (-W -n): every reference to jexpm or flows must resolve.
# Names of other libraries are not resolved (no network access at build time), so
# references to them are accepted as they are.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|jnp|np|numpy|flax|nnx|optax|orbax|ocp|tfds|PIL|tf)(\..*)?"),
    (r"py:.*", r"(typing|collections|collections\.abc|pathlib|dataclasses|enum|abc)\..*"),
    (r"py:.*", r"(ArrayLike|Array|DTypeLike|Literal|Any|Callable|Mapping|Sequence)"),
    (r"py:.*", r"(Iterator|Iterable|NamedTuple|Path|PRNGKeyArray|Shape|Self)"),
    (r"py:class", r"(optional|default|callable|array|arrays|array-like|iterable|.*\bof\b.*)"),
    (r"py:class", r"(int|float|bool|str|tuple|dict|list|None|object|type|bytes)"),
    # A dataclass default such as (8, 4, 2) under ``tuple[int, ...]`` reaches the parser
    # cut at its comma.
    (r"py:class", r"tuple\[(int|float)"),
]
suppress_warnings = ["myst.header"]  # the results files start their headings at any level

# MathJax: from its CDN by default, as the anchors' sites do; JEXPM_DOCS_MATHJAX names a
# local copy (e.g. a MathJax 2.7 ``MathJax.js?config=TeX-AMS-MML_HTMLorMML``) for reading
# the built site offline.
if os.environ.get("JEXPM_DOCS_MATHJAX"):
    mathjax_path = os.environ["JEXPM_DOCS_MATHJAX"]
    if "MathJax.js" in mathjax_path:  # MathJax 2
        mathjax2_config = {
            "tex2jax": {
                "inlineMath": [["\\(", "\\)"]],
                # myst-nb marks notebook cells mathjax_ignore and their maths "math"
                "processClass": "tex2jax_process|mathjax_process|math|output_area",
                "ignoreClass": "tex2jax_ignore|mathjax_ignore",
            }
        }

html_theme = "sphinx_book_theme"
html_title = f"jexpm {version}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "repository_url": "https://github.com/jexpm/jexpm",
    "use_repository_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


# -- The notebooks ------------------------------------------------------------------------
# examples/*.ipynb are committed without outputs. The slow test that runs them
# (tests/examples/test_notebooks.py) writes each executed notebook to
# build/executed-notebooks/; the site renders that copy when its cells are those of the
# committed notebook. Otherwise the page is rendered without outputs and says so, or,
# with JEXPM_DOCS_REQUIRE_OUTPUTS=1 (as in CI), the build stops and names the notebook.
EXECUTED = Path(os.environ.get("JEXPM_EXECUTED_NOTEBOOKS", ROOT / "build" / "executed-notebooks"))
NOTEBOOK_PAGES = DOCS / "notebooks"
MISSING_OUTPUTS_NOTE = (
    "```{note}\nThis page was built without the notebook's outputs: build the site after "
    "`python -m pytest tests/examples -m slow`, which runs the notebook and keeps its "
    "outputs for the site.\n```\n"
)


def _cells(nb: dict) -> list[tuple[str, str]]:
    def text(source):
        return source if isinstance(source, str) else "".join(source)

    return [(cell["cell_type"], text(cell["source"])) for cell in nb["cells"]]


def _notebook_page(committed: Path) -> tuple[dict, bool]:
    nb = json.loads(committed.read_text())
    executed = EXECUTED / committed.name
    if executed.exists():
        run = json.loads(executed.read_text())
        if _cells(run) == _cells(nb):
            return run, True
    return nb, False


def _write_notebook_pages() -> None:
    missing = []
    for committed in sorted((ROOT / "examples").glob("*.ipynb")):
        nb, with_outputs = _notebook_page(committed)
        if not with_outputs:
            missing.append(committed.name)
            note = {
                "cell_type": "markdown",
                "id": "built-without-outputs",
                "metadata": {},
                "source": MISSING_OUTPUTS_NOTE,
            }
            nb["cells"].insert(1, note)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        page = NOTEBOOK_PAGES / committed.name
        if not page.exists() or page.read_text() != text:  # unchanged: no rebuild
            page.write_text(text)
    if missing and os.environ.get("JEXPM_DOCS_REQUIRE_OUTPUTS") == "1":
        raise RuntimeError(
            f"no executed copy in {EXECUTED} matches {', '.join(missing)}; run "
            "python -m pytest tests/examples -m slow first"
        )
    if missing:
        logger.info("notebooks rendered without outputs: %s", ", ".join(missing))


_write_notebook_pages()


# -- Constants re-exported from private modules --------------------------------------------
# A constant documents itself with a ``#:`` comment where it is defined; autodoc reads such
# comments only in the module it documents (``jexpm``, ``flows``), so for a name that
# module imports, the comment is looked up in the private module that defines it.


def _defining_comment(name: str, obj: object) -> list[str] | None:
    package = name.split(".")[0]
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith(f"{package}.") or module is None:
            continue
        for local, value in list(vars(module).items()):
            if value is not obj or local.startswith("__"):
                continue
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", local))
            if docs:
                return list(docs)
    return None


def _document_constant(app, what, name, obj, options, lines) -> None:
    if what != "data":
        return
    comment = _defining_comment(name, obj)
    if comment is not None:
        lines[:] = comment


def setup(app) -> None:
    """Register the hook above."""
    app.connect("autodoc-process-docstring", _document_constant)
