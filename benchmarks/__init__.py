"""Benchmarks of jexpm and of the matrix-exponential flows; not part of either package.

Programs (each with ``--help``; the first three with ``--quick``, writing to
``benchmarks/results/``):

* ``python -m benchmarks.expm``: expm speed, gradients and low precision;
* ``python -m benchmarks.products``: the product form per matrix size;
* ``python -m benchmarks.flows``: the Glow experiments of Xiao & Liu (2020) and the
  Taylor 15+ paper (training step, sampling, (m, s) in training, products and accuracy).
* ``python -m benchmarks.device --out DIR``: the accelerator run in one command, within a
  time budget, written to DIR (:mod:`benchmarks.device`; ``--smoke`` for tiny sizes).
* ``python -m benchmarks.paper_gpu --out DIR``: the paper's Glow experiment on one card in
  one process, beside the authors' PyTorch Glow with ``--torch-glow PATH``
  (:mod:`benchmarks.paper_gpu`, :mod:`benchmarks.torch_glow`).
* ``python -m benchmarks.floor``: expm against the cost of the products it runs.

Modules: :mod:`benchmarks.harness` (timing, inputs, errors, reports),
:mod:`benchmarks.isolation` (one measurement per process, with limits and deadlock
detection), :mod:`benchmarks.torch_adapter`, :mod:`benchmarks.paper_loop` (the paper's
baseline run eagerly, as published), and one module per suite:
:mod:`benchmarks.expm_speed`, :mod:`benchmarks.expm_grad`,
:mod:`benchmarks.low_precision`, :mod:`benchmarks.product_forms`,
:mod:`benchmarks.accuracy`, :mod:`benchmarks.glow_speed`, :mod:`benchmarks.training_ms`.
"""
