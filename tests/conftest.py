"""Shared test configuration: one compilation cache per run, and compiled programs that do
not outlive their test module.

The suite compiles thousands of programs (Glow variants, every order and transform of
expm), many of them more than once: each ``train_and_evaluate`` call, resumed run,
subprocess and notebook kernel compiles its training step afresh. JAX's persistent
compilation cache, in a directory made for this run and removed after it, lets every
process of the run (pytest-xdist workers, the subprocesses and kernels they start, which
inherit the environment) compile each program once (except the non-zero processes of a
multi-process run, see tests/flows/test_multiprocess.py). Only programs that took a while
to compile are stored; a run never sees a previous run's programs.

The tests run in several processes at once (pytest-xdist); on a GPU, JAX would give the
first of them 75% of the memory, so they allocate as they go instead.

JAX keeps compiled programs in memory for the process's lifetime; clearing those caches
after each module keeps a process's memory that of one module's work.

pytest-xdist (``--dist loadfile``) hands whole files to its workers in the order of
collection (``--no-loadscope-reorder``), which starts the longest files first: see
``LONGEST_FIRST``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter

import jax
import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles (tests/jexpm/test_properties.py). "ci", the default: a few examples
# per property from a fixed seed, so that the suite is reproducible and quick; "deep"
# (--hypothesis-profile=deep): a long random search. Compiling a new program dominates an
# example's cost, so no per-example deadline; no example database is kept on disk.
_HYPOTHESIS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=6, derandomize=True, **_HYPOTHESIS)
settings.register_profile("deep", max_examples=2500, **_HYPOTHESIS)
settings.load_profile("ci")

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
#: Programs that compile faster than this are not worth a disk round trip.
MIN_COMPILE_SECONDS = 0.5
#: The cache directory this process made (and removes), if it made one.
_MADE_CACHE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # The first process of a run makes the directory; xdist workers and every process the
    # tests start inherit it through the environment.
    if CACHE_ENV not in os.environ:
        config.stash[_MADE_CACHE] = tempfile.mkdtemp(prefix="jexpm-test-xla-cache-")
        os.environ[CACHE_ENV] = config.stash[_MADE_CACHE]
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(MIN_COMPILE_SECONDS)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    seconds = os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(seconds))


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_MADE_CACHE, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        del os.environ[CACHE_ENV]


#: The test files that take longest, longest first (measured one file at a time on two
#: CPU cores, and in CI's durations). pytest-xdist's ``--dist loadfile`` gives a worker
#: one whole file at a time, the next in the queue when it is almost done with its own;
#: by default it queues the files with the most tests first, which put the files of a few
#: long tests (the training runs, the notebooks, the multi-process runs) after dozens of
#: others, where one of them could run alone at the end. These go first, then the others
#: as pytest-xdist would queue them (most tests first): short files make the end of the
#: run, and keep both workers busy. Each file's tests keep their order.
LONGEST_FIRST = (
    "tests/examples/test_notebooks.py",
    "tests/jexpm/test_api.py",
    "tests/jexpm/test_grad.py",
    "tests/flows/test_train.py",
    "tests/flows/test_multiprocess.py",
    "tests/jexpm/test_kernel.py",
    "tests/jexpm/test_multiply.py",
    "tests/jexpm/test_accuracy.py",
    "tests/flows/test_glow.py",
    "tests/flows/test_layers.py",
    "tests/flows/test_forward_mode.py",
    "tests/docs/test_docs.py",
    "tests/jexpm/test_backend_paths.py",
    "tests/jexpm/test_phi.py",
    "tests/jexpm/test_member_orders.py",
    "tests/jexpm/test_action_kernel.py",
    "tests/benchmarks/test_isolation.py",
    "tests/benchmarks/test_device.py",
    "tests/flows/test_statistics.py",
    "flows/_glow.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Queue the files for pytest-xdist (``--no-loadscope-reorder``): see LONGEST_FIRST."""
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    tests_in = Counter(_file_of(item) for item in items)

    def queue_position(item: pytest.Item) -> tuple[int, int]:
        path = _file_of(item)
        return rank.get(path, len(rank)), -tests_in[path]

    # A stable sort: the files of equal rank, and each file's tests, keep their order.
    items.sort(key=queue_position)


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    yield
    jax.clear_caches()
