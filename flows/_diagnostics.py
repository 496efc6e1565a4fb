"""Which Taylor order m and how many squarings s the model's exponentials use."""

from __future__ import annotations

import collections
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jexpm

from ._glow import FlowStep, Glow
from ._layers import MatrixExpCoupling


def expm_statistics(model: Glow, x: jax.Array) -> dict[str, dict[str, np.ndarray]]:
    r"""Orders m and squarings s of every exponential in one forward pass over x.

    Runs the data-to-latent pass and, before each flow step, asks jexpm with
    ``return_info=True`` what it does for that step's matrices: W of the 1x1
    convolution, and S of the coupling at every pixel (or VU, whose
    :math:`\varphi_1` the low-rank form evaluates). These are the same matrices,
    method and tolerance as in training, so the same (m, s).

    Returns:
      ``{"1x1 conv": {"order": ..., "squarings": ...}, "coupling": {...}}``, one entry
      per matrix. Empty for ``method="jax.scipy"`` (not a jexpm method); couplings
      other than matrix-exp contribute nothing.
    """
    return {
        kind: {"order": np.asarray(order), "squarings": np.asarray(squarings)}
        for kind, (order, squarings) in _collect(model, x).items()
    }


@nnx.jit
def _collect(model: Glow, x: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
    found: dict[str, list] = collections.defaultdict(list)

    def visit(step: FlowStep, h: jax.Array) -> None:
        conv = step.conv
        if conv.method not in jexpm.METHODS:
            return
        info = jexpm.expm(conv.weight[...], method=conv.method, tol=conv.tol, return_info=True)[1]
        found["1x1 conv"].append(info)
        coupling = step.coupling
        if not isinstance(coupling, MatrixExpCoupling):
            return
        h, _ = step.actnorm.forward_and_log_det(h)
        h, _ = conv.forward_and_log_det(h)
        raw = coupling.net(h[..., : coupling.c1])[..., coupling.c2 :]
        method = cast(jexpm.Method, coupling.method)
        generator = coupling.generator(raw)
        if isinstance(generator, tuple):  # the low-rank form's factors
            u, v = generator
            info = jexpm.phi1(v @ u, method=method, tol=coupling.tol, return_info=True)[1]
        else:
            info = jexpm.expm(generator, method=method, tol=coupling.tol, return_info=True)[1]
        found["coupling"].append(info)

    model._forward(x, visit=visit)
    return {
        kind: (
            jnp.concatenate([jnp.ravel(i.order) for i in infos]),
            jnp.concatenate([jnp.ravel(i.squarings) for i in infos]),
        )
        for kind, infos in found.items()
    }


def histogram(values: np.ndarray) -> dict[str, int]:
    """Counts of each distinct value, keys as strings (JSON-ready), sorted."""
    keys, counts = np.unique(np.asarray(values), return_counts=True)
    return {str(int(k)): int(c) for k, c in zip(keys, counts, strict=True)}
