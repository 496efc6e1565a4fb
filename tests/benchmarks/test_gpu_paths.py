"""The device run's count of host round trips from a profile, checked on the CPU."""

from __future__ import annotations

import gzip
import json

import jax
import jax.numpy as jnp

from benchmarks import gpu_paths


def test_trace_events_counts_device_to_host_copies(tmp_path):
    # The shape of a perfetto trace as jax.profiler writes it, with XLA's event names.
    run = tmp_path / "plugins" / "profile" / "run"
    run.mkdir(parents=True)
    events = [
        {"name": "MemcpyH2D", "ph": "X"},
        {"name": "MemcpyD2H", "ph": "X"},
        {"name": "MemcpyD2H", "ph": "X"},
        {"name": "triton_kernel", "ph": "X"},
        {"ph": "M"},
    ]
    with gzip.open(run / "perfetto_trace.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"traceEvents": events}, f)
    assert gpu_paths.trace_events(tmp_path, gpu_paths.D2H_EVENT) == 2
    assert gpu_paths.trace_events(tmp_path, "MemcpyH2D") == 1


def test_host_copies_profiles_the_calls():
    # On the CPU the trace has the calls but no device, so no device-to-host copy.
    f = jax.jit(lambda x: x @ x)
    x = jnp.ones((4, 4))
    assert gpu_paths.host_copies(lambda: f(x), calls=2) == 0.0
