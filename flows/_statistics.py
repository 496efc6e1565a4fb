"""(m, s) statistics: what the model's exponentials did, reported by the layers themselves.

Every layer that exponentiates records jexpm's :class:`jexpm.ExpmInfo` (Taylor order m
and squarings s per matrix) of the calls its forward or inverse pass already makes,
with ``nnx.Module.sow`` into ``nnx.Intermediate`` under one of the names in
:data:`KINDS`. Nothing is recorded unless the caller asks for it with
``nnx.capture(fn, nnx.Intermediate)``; the trainer does so in its training step, so
logging the statistics costs no extra forward pass::

    forward = nnx.capture(lambda model, x: model.log_prob(x), nnx.Intermediate)
    log_prob, intermediates = forward(model, x)
    orders_and_squarings = flows.expm_statistics(intermediates)
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jexpm

#: Recorded name -> the kind of exponential it counts.
KINDS: Mapping[str, str] = {
    "expm_conv": "1x1 conv",
    "expm_coupling": "coupling",
    "expm_coupling_action": "coupling action",
}


def _capturing(module: nnx.Module) -> bool:
    # nnx.capture gives every module it records into a ``__captures__`` attribute
    # for the duration of the call (flax 0.12); outside it ``sow`` is deprecated.
    # tests/flows/test_statistics.py checks both sides of this.
    return hasattr(module, "__captures__")


def record(module: nnx.Module, name: str, info: jexpm.ExpmInfo | jexpm.ActionInfo | None) -> None:
    """Record ``info`` on ``module`` under ``name`` (a key of :data:`KINDS`) when captured.

    ``None`` (a method that reports nothing) and calls outside ``nnx.capture`` record
    nothing.
    """
    if info is not None and _capturing(module):
        module.sow(nnx.Intermediate, name, info)


def expm_statistics(intermediates: nnx.State) -> dict[str, dict[str, jax.Array]]:
    """Orders m and squarings s per kind of exponential, from captured intermediates.

    Args:
      intermediates: the ``nnx.Intermediate`` state ``nnx.capture`` returned for a
        pass through a model (or any module) of flow layers.

    Returns:
      ``{"1x1 conv": {"order": ..., "squarings": ...}, "coupling": {...},
      "coupling action": {"order": ..., "steps": ...}}``: flat int32 arrays with one
      entry per matrix
      exponentiated (for the low-rank coupling, per r x r :func:`jexpm.phi1`; for the
      action, :func:`jexpm.expm_multiply`'s Taylor order and scaling steps per
      matrix); kinds that recorded nothing are absent.
    """
    found: dict[str, list] = collections.defaultdict(list)
    for path, variable in nnx.to_flat_state(intermediates):
        name = str(path[-1])
        if name in KINDS:
            found[KINDS[name]].extend(variable.get_value())
    return {kind: _concatenated(infos) for kind, infos in found.items()}


def _concatenated(infos: list) -> dict[str, jax.Array]:
    action = isinstance(infos[0], jexpm.ActionInfo)
    scaling = [jnp.ravel(i.steps if action else i.squarings) for i in infos]
    return {
        "order": jnp.concatenate([jnp.ravel(i.order) for i in infos]),
        "steps" if action else "squarings": jnp.concatenate(scaling),
    }


def histogram(values: np.ndarray) -> dict[str, int]:
    """Counts of each distinct value, keys as strings (JSON-ready), sorted."""
    keys, counts = np.unique(np.asarray(values), return_counts=True)
    return {str(int(k)): int(c) for k, c in zip(keys, counts, strict=True)}
