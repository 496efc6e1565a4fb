# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training a Glow with matrix-exponential layers
#
# A normalizing flow maps images $x$ to Gaussian latents $z$ through invertible layers and
# scores them exactly: $\log p(x) = \log \mathcal{N}(z) + \log|\det \partial z/\partial x|$.
# In the Glow of [Xiao & Liu (2020)](https://arxiv.org/abs/2007.09651) two layers are
# matrix exponentials:
#
# * the **1x1 convolution** mixes channels with $e^{W}$: its log-determinant is just
#   $\operatorname{tr}(W) \cdot H \cdot W_s$ and its inverse is $e^{-W}$;
# * the **coupling** transforms half the channels with $e^{S(x_1)}$, a matrix per pixel
#   predicted by a small network: thousands of small exponentials per batch, which is
#   where a fast batched `jexpm.expm` pays off.
#
# This notebook trains a small Glow on the offline default data (32x32 patches of the
# photographs that ship with scikit-image, so nothing is downloaded), plots bits/dim,
# shows samples, and ends with how to switch to CIFAR-10. It takes one to two minutes
# on a two-core CPU. On Colab the first cell installs jexpm; elsewhere it does nothing.

# %%
import sys

if "google.colab" in sys.modules:  # Colab only: install jexpm and the notebook extras
    # %pip install -q "jexpm[notebooks] @ git+https://github.com/jexpm/jexpm"
    print("jexpm installed")

# %%
import dataclasses
import json
import tempfile
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from PIL import Image

import flows
from flows import configs, input_pipeline, train

print(f"jax {jax.__version__} on {jax.devices()[0].platform}")

# %% [markdown]
# ## 1. The data
#
# `input_pipeline.load("default", split)` cuts 32x32 patches from colour photographs bundled
# with scikit-image; the test split holds out a whole photograph.

# %%
train_source = input_pipeline.load("default", "train")
test_source = input_pipeline.load("default", "test")
print(len(train_source), "train and", len(test_source), "test patches of", train_source.image_shape)

fig, axes = plt.subplots(2, 8, figsize=(8, 2))
for ax, image in zip(axes.flat, train_source[np.arange(0, 1600, 100)], strict=True):
    ax.imshow(image)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Train
#
# The `default` config is a small Glow (3 levels of 2 steps, 32 hidden channels) trained
# with Adamax, warm-up and Polyak averaging. We shorten it to 150 steps here;
# `python -m flows.train` runs the full default from a shell. Everything lands in the work
# directory: metrics as JSON lines, (m, s) statistics of the exponentials, sample grids and
# an orbax checkpoint (rerunning with the same directory resumes).

# %%
config = dataclasses.replace(
    configs.get_config("default"),
    num_train_steps=150,
    log_every_steps=25,
    eval_every_steps=75,
    checkpoint_every_steps=75,
)
workdir = Path(tempfile.mkdtemp(prefix="glow-"))
result = train.train_and_evaluate(config, workdir)
print(json.dumps(result, indent=1))

# %%
rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
train_curve = [(r["step"], r["train_bits_per_dim"]) for r in rows if "train_bits_per_dim" in r]
eval_curve = [(r["step"], r["eval_bits_per_dim"]) for r in rows if "eval_bits_per_dim" in r]
plt.plot(*zip(*train_curve, strict=True), label="train")
plt.plot(*zip(*eval_curve, strict=True), "o-", label="test (EMA parameters)")
plt.xlabel("step")
plt.ylabel("bits/dim")
plt.legend()
plt.show()

# %% [markdown]
# ## 3. What the exponentials did
#
# `expm_stats.jsonl` records, at every log step, what the exponentials chose for every
# matrix of a batch: the Taylor order m and the squarings s of `jexpm.expm` (the 1x1
# convolutions, and couplings that form e^S), or the order m and the scaling steps s of
# `jexpm.expm_multiply` (couplings that apply e^S to each pixel's vector without forming
# it). Both are picked per batch from the matrices' norms, on the device.

# %%
stats = [json.loads(line) for line in (workdir / "expm_stats.jsonl").read_text().splitlines()]
last = {row["kind"]: row for row in stats if row["step"] == stats[-1]["step"]}
for kind, row in last.items():
    scaling = "squarings" if "squarings" in row else "steps"
    print(f"{kind:15s} order m: {row['order']}   {scaling} s: {row[scaling]}")

# %% [markdown]
# ## 4. Samples
#
# The training program wrote a grid of samples (temperature 0.7) at each evaluation. We can
# also load the checkpoint and sample ourselves at several temperatures. Sampling runs the
# flow backwards through a loop over each level's steps; under `nnx.jit` that is one
# program, compiled once for every temperature, where an eager call would compile each
# loop afresh.

# %%
grid = sorted(workdir.glob("samples_*.png"))[-1]
plt.imshow(Image.open(grid))
plt.axis("off")
plt.title(grid.name)
plt.show()

# %%
model = train.load_model(workdir, config)
sample = nnx.jit(lambda model, key, temperature: model.sample(key, 16, temperature))
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, temperature in zip(axes, (0.5, 0.7, 1.0), strict=True):
    images = flows.to_uint8(sample(model, jax.random.key(0), temperature))
    tiles = np.asarray(images).reshape(4, 4, 32, 32, 3).transpose(0, 2, 1, 3, 4)
    ax.imshow(tiles.reshape(128, 128, 3))
    ax.set_title(f"T = {temperature}")
    ax.axis("off")
plt.show()

# %% [markdown]
# The flow is exactly invertible: encoding the samples gives back their latents.


# %%
@nnx.jit
def decode_encode(model, x):
    return model.inverse_and_log_det(model.encode(x))[0]


x = sample(model, jax.random.key(1), 0.7)
round_trip = float(np.max(np.abs(np.asarray(decode_encode(model, x)) - np.asarray(x))))
print(f"max |decode(encode(x)) - x| = {round_trip:.1e}")

# %% [markdown]
# ## 5. On CIFAR-10, ImageNet and GPUs
#
# The paper's settings are the `cifar10`, `imagenet32` and `imagenet64` configs. Data come
# through tensorflow-datasets, prepared once (this needs TensorFlow and downloads the
# data):
#
# ```bash
# pip install "jexpm[flows,data]" tensorflow
# tfds build cifar10 --file_format=array_record
# python -m flows.train --config cifar10 --workdir runs/cifar10
# ```
#
# Reading prepared data needs no TensorFlow. On a machine with a GPU, install JAX with
# CUDA (`pip install -U "jax[cuda12]"`); the same command then trains on every local
# device, data-parallel. Swap the exponential with `--set expm_method=ps` (or `baseline`,
# `jax.scipy`) to compare.

# %%
first, final = train_curve[0][1], train_curve[-1][1]
assert final < first - 1.0, (first, final)  # bits/dim fell by more than one bit
assert eval_curve[-1][1] < 6.5, eval_curve
assert result["skipped_batches"] == 0
assert round_trip < 1e-3
assert set(last) == {"1x1 conv", "coupling", "coupling action"}
print("all checks passed")
