"""The notebooks in examples/: committed clean, in sync with their jupytext scripts, and run.

Every ``examples/*.ipynb`` is picked up. Each is paired (``ipynb,py:percent``) with a
``.py`` script of the same name, the file to edit; regenerate the notebook with
``jupytext --sync examples/NAME.py``. A notebook opens with one install cell that only acts
on Colab, and ends with a cell of ``assert`` statements on what it shows, so that running
it end to end (the slow test below, in a fresh kernel on this interpreter) checks it.

The slow test also keeps each executed notebook in ``build/executed-notebooks/`` (or
``$JEXPM_EXECUTED_NOTEBOOKS``), git-ignored, where the documentation build finds the
outputs it renders (``docs/about.md``): the notebooks run once, here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell: a guard against hangs, not a speed test
KERNEL_NAME = "jexpm-pytest"
INSTALL_LINE = '%pip install -q "jexpm[notebooks] @ git+https://github.com/jexpm/jexpm"'
# Python's warning format, "file:line: SomeWarning: message", in a cell's stderr.
WARNING_RE = re.compile(r"\b\w*Warning: ")
# Where the executed notebooks are kept for the documentation site (docs/conf.py).
EXECUTED = Path(os.environ.get("JEXPM_EXECUTED_NOTEBOOKS", ROOT / "build" / "executed-notebooks"))

notebooks = pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def _code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_notebooks_are_found():
    assert {"jexpm_tour", "glow_training", "orthogonal_finetuning"} <= {p.stem for p in NOTEBOOKS}


@notebooks
def test_committed_without_outputs(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(_code_cells(nb)):
        assert cell.outputs == [], f"code cell {index} has outputs; clear them"
        assert cell.execution_count is None, f"code cell {index} has an execution count"


@notebooks
def test_paired_with_its_script(notebook: Path):
    script = notebook.with_suffix(".py")
    assert script.exists(), f"{notebook.name} needs its jupytext script {script.name}"
    from_ipynb = jupytext.read(notebook)
    from_py = jupytext.read(script, fmt="py:percent")
    for nb in (from_ipynb, from_py):
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    cells_ipynb = [(cell.cell_type, cell.source) for cell in from_ipynb.cells]
    cells_py = [(cell.cell_type, cell.source) for cell in from_py.cells]
    assert cells_ipynb == cells_py, f"out of sync; run: jupytext --sync examples/{script.name}"


@notebooks
def test_opens_with_one_colab_install_cell(notebook: Path):
    sources = [cell.source for cell in _code_cells(nbformat.read(notebook, as_version=4))]
    assert 'if "google.colab" in sys.modules:' in sources[0]
    assert INSTALL_LINE in sources[0]
    assert not any("%pip" in source or "!pip" in source for source in sources[1:])


def _kernel_manager(tmp_path: Path):
    """A kernel manager whose only kernelspec runs ipykernel on this very interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info.major} (pytest)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # The repository's packages, whether or not they are installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Standard platform directories in jupyter_core: its future default, and what older
    # jupyter_core 5.x releases ask for before they stop warning about the migration.
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # The kernel's default inline matplotlib backend, as on Colab, not one set outside.
    env.pop("MPLBACKEND", None)
    # debugpy's "frozen modules" notice on Python >= 3.11.
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


@pytest.mark.slow
@notebooks
def test_notebook_runs(notebook: Path, tmp_path: Path, capsys, record_property):
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    # cleanup_kc: shut the kernel down and close the client's sockets afterwards, which
    # nbclient leaves to the caller when it is handed the kernel manager.
    client.execute(env=_kernel_env(), cleanup_kc=True)  # CellExecutionError if a cell fails
    elapsed = time.perf_counter() - start
    record_property("execution_seconds", round(elapsed, 1))
    with capsys.disabled():
        print(f"\n{notebook.name}: executed in {elapsed:.1f} s", end=" ")

    cells = _code_cells(nb)
    assert all(cell.execution_count is not None for cell in cells), "not every cell ran"
    assert re.search(r"^assert ", cells[-1].source, re.MULTILINE), (
        "the last code cell should assert what the notebook shows"
    )
    for index, cell in enumerate(cells):
        for output in cell.outputs:
            assert output.output_type != "error", f"code cell {index} raised"
            if output.output_type == "stream" and output.name == "stderr":
                assert not WARNING_RE.search(output.text), f"code cell {index}:\n{output.text}"
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED / notebook.name)  # for the documentation site
