"""XLA compile options for the flows' programs (training step, evaluation, sampling).

On the CPU, jaxlib 0.10's XLA hands convolutions, matrix products and reductions to
the YNNPACK library by default. For the flows' convolutions (3x3 and 1x1, 6 to 600
channels at 4x4 to 16x16 pixels) XLA's own Eigen kernels are faster: on a 2-core AMD
EPYC, a 3x3 convolution of a (64, 16, 16, 32) batch to 32 channels took 3.8 ms through
YNNPACK and 1.8 ms without it, and the kernel gradient of one to 42 channels 11.5 and
5.8 ms. Matrix products (jexpm's products of 12x12 and 24x24 matrices inside the model)
and reductions stay faster in YNNPACK. Reductions matter: the gradients of every bias,
LayerNorm and ActNorm parameter sum over batch and pixels, and XLA:CPU on its own splits
such a sum into a reduce-window and a reduce (0.23 against 0.065 ms through YNNPACK for
a (64, 16, 16, 32) batch summed to 32 channels; a profile of a CIFAR-10-shape training
step put 33 ms per step in those reduce-windows). :func:`compiler_options` gives the
options that keep only convolutions out of YNNPACK for one compilation
(``jax.jit(..., compiler_options=...)``), leaving every other program of the process as
it was; other backends get none. The documentation's docs/results/glow_step.md has the
training-step figures.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

#: Options for XLA:CPU: of the kinds of computation XLA hands to YNNPACK by default
#: (among them single matrix products, single convolutions and reductions), single
#: matrix products and reductions. The option takes a comma-separated list.
CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The compile options for the flows' programs on ``backend`` (default: JAX's default).

    On the CPU, ``CPU_OPTIONS`` if the installed XLA knows them (a jaxlib that has
    dropped the experimental option compiles without it); elsewhere none. Pass the
    result to ``jax.jit(..., compiler_options=...)``.
    """
    if (backend or jax.default_backend()) != "cpu" or not _cpu_options_known():
        return {}
    return dict(CPU_OPTIONS)


@functools.cache
def _cpu_options_known() -> bool:
    """Whether XLA:CPU accepts :data:`CPU_OPTIONS` (one tiny compilation, once)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True
