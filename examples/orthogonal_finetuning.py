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
# # Orthogonal fine-tuning with matrix exponentials
#
# Orthogonal fine-tuning (OFT, [Qiu et al. 2023](https://arxiv.org/abs/2306.07280)) adapts a
# pretrained linear layer $y = xW + b$ by *rotating* its output columns instead of adding
# to its weights:
#
# $$y = x\,W\,\operatorname{blockdiag}(Q_1, \dots, Q_k) + b, \qquad
#   Q_j = e^{S_j - S_j^T}.$$
#
# $W$ and $b$ stay frozen; only the generators $S_j$ (b x b blocks) are trained. Because
# $S_j - S_j^T$ is skew-symmetric, every $Q_j$ is exactly orthogonal (up to rounding)
# whatever $S_j$ is, so the singular values of $W$ (its "pretrained knowledge") are
# preserved. $S = 0$ gives $Q = I$: training starts from the pretrained model exactly.
#
# `flows.OrthogonalLinear` is this layer, in Flax NNX; `jexpm.orthogonal` computes the
# $Q_j$. This notebook fine-tunes a small MLP in **bfloat16**, plots the loss, and checks
# that the rotations stay orthogonal and the singular values of every kernel are kept.
# It runs in well under a minute on a CPU. On Colab the first cell installs jexpm;
# elsewhere it does nothing.

# %%
import sys

if "google.colab" in sys.modules:  # Colab only: install jexpm and the notebook extras
    # %pip install -q "jexpm[notebooks] @ git+https://github.com/jexpm/jexpm"
    print("jexpm installed")

# %%
import itertools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import jexpm
from flows import OrthogonalLinear

print(f"jax {jax.__version__} on {jax.devices()[0].platform}, jexpm {jexpm.__version__}")

# %% [markdown]
# ## 1. Orthogonal matrices from any parameter
#
# `jexpm.orthogonal(s)` returns $e^{S - S^T}$; a stack of shape (k, b, b) gives k blocks.
# Each block is a rotation: $Q^T Q = I$ and $\det Q = +1$. In bfloat16 the exponential is
# computed in float32 and rounded, so $Q$ is orthogonal to bfloat16 precision
# ($2^{-8} \approx 4 \cdot 10^{-3}$).

# %%
s = jax.random.normal(jax.random.key(0), (4, 16, 16))
q = jexpm.orthogonal(s)
eye16 = jnp.eye(16)
print("Q:", q.shape, q.dtype)
print(f"max |QᵀQ - I| = {float(jnp.abs(q.mT @ q - eye16).max()):.1e}")
print("det Q =", jnp.linalg.det(q))
q_bf16 = jexpm.orthogonal(s.astype(jnp.bfloat16)).astype(jnp.float32)
print(f"bfloat16: max |QᵀQ - I| = {float(jnp.abs(q_bf16.mT @ q_bf16 - eye16).max()):.1e}")

# %% [markdown]
# ## 2. A "pretrained" model and a new task
#
# A small tanh MLP (16 → 64 → 64 → 8) with random weights stands in for a pretrained model.
# The new task is the same network with the output directions of every layer turned by a
# random block-diagonal rotation $Q^\ast$ (angles up to about 1 radian): a change that
# rotations alone can reach, the case OFT is made for. Inputs are fresh Gaussian samples,
# labelled by this *teacher*; nothing is downloaded.

# %%
FEATURES = (16, 64, 64, 8)  # input, hidden, hidden, output
BLOCK_SIZE = 16  # rotation blocks; the 8-wide output layer gets one 8x8 block


class MLP(nnx.Module):
    def __init__(self, features, *, rngs: nnx.Rngs):
        self.layers = nnx.List(
            nnx.Linear(d_in, d_out, rngs=rngs) for d_in, d_out in itertools.pairwise(features)
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


def random_rotation(key, d_out, angle=1.0):
    """Rotation blocks (d_out / b, b, b) whose skew generators have 1-norm <= `angle`."""
    b = min(BLOCK_SIZE, d_out)
    s = jax.random.normal(key, (d_out // b, b, b))
    return jexpm.orthogonal(s, max_norm=angle)  # scales S - Sᵀ down to 1-norm <= angle


def rotate_columns(kernel, q):
    """kernel @ blockdiag(q), without forming the block-diagonal matrix."""
    d_in, d_out = kernel.shape
    k, b, _ = q.shape
    return jnp.einsum("ikb,kbc->ikc", kernel.reshape(d_in, k, b), q).reshape(d_in, d_out)


pretrained = MLP(FEATURES, rngs=nnx.Rngs(0))
teacher = nnx.clone(pretrained)
teacher_rotations = []
keys = jax.random.split(jax.random.key(1), len(teacher.layers))
for layer, key in zip(teacher.layers, keys, strict=True):
    q_star = random_rotation(key, layer.out_features)
    layer.kernel[...] = rotate_columns(layer.kernel[...], q_star)
    teacher_rotations.append(q_star)

# %% [markdown]
# ## 3. The OFT model
#
# Every `nnx.Linear` is wrapped with `OrthogonalLinear.from_linear`: its kernel and bias
# become frozen variables and a zero generator `s` of shape (d_out / b, b, b) is the only
# `nnx.Param`. With `dtype=jnp.bfloat16` the layer computes in bfloat16 (input, kernel,
# bias and the rotation), while `s` itself is kept in float32 for the optimiser: the usual
# mixed-precision recipe.


# %%
class OFTMLP(nnx.Module):
    def __init__(self, base: MLP, *, dtype, rngs: nnx.Rngs):
        self.layers = nnx.List(
            OrthogonalLinear.from_linear(
                layer, block_size=min(BLOCK_SIZE, layer.out_features), dtype=dtype, rngs=rngs
            )
            for layer in base.layers
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


model = OFTMLP(pretrained, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
n_trainable = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
n_total = sum(p.size for p in jax.tree.leaves(nnx.state(model)))
print(f"trainable (the generators S): {n_trainable}, frozen: {n_total - n_trainable}")
x = jax.random.normal(jax.random.key(2), (4, FEATURES[0]))
print("at initialisation, OFT model vs pretrained model (bfloat16 rounding only):")
print(np.asarray(model(x)[0].astype(jnp.float32)))
print(np.asarray(pretrained(x)[0]))

# %% [markdown]
# ## 4. Training
#
# A mean squared error against the teacher, and Adam with a cosine learning-rate decay on
# the generators only. The train step is functional: `nnx.split` separates the trainable
# generators from the frozen weights once, and `nnx.merge` rebuilds the model inside
# `jax.jit`. For comparison the same run is repeated in float32. (On a CPU bfloat16 is
# emulated and no faster; on GPUs and TPUs it is the fast path.)


# %%
def finetune(dtype, steps=300, batch_size=256, learning_rate=3e-2, seed=3):
    model = OFTMLP(pretrained, dtype=dtype, rngs=nnx.Rngs(0))
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        x = jax.random.normal(key, (batch_size, FEATURES[0]))
        y = teacher(x)  # float32 labels

        def loss_fn(params):
            pred = nnx.merge(graphdef, params, frozen)(x)
            return jnp.mean((pred.astype(jnp.float32) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for key in jax.random.split(jax.random.key(seed), steps):
        params, opt_state, loss = train_step(params, opt_state, key)
        losses.append(float(loss))
    return nnx.merge(graphdef, params, frozen), np.array(losses)


model, losses = finetune(jnp.bfloat16)
model_f32, losses_f32 = finetune(jnp.float32)
print(f"bfloat16: loss {losses[0]:.2e} -> {losses[-1]:.2e}")
print(f"float32:  loss {losses_f32[0]:.2e} -> {losses_f32[-1]:.2e}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.semilogy(losses, label="bfloat16")
ax.semilogy(losses_f32, label="float32", alpha=0.8)
ax.axhline(losses[0], color="gray", ls="--", lw=0.8, label="pretrained model (step 0)")
ax.set(xlabel="Adam step", ylabel="mean squared error", title="Orthogonal fine-tuning")
ax.legend()
plt.show()

# %% [markdown]
# The loss falls by more than two orders of magnitude from the pretrained model's, and
# bfloat16 tracks float32 closely.
#
# ## 5. The rotations stay orthogonal and the singular values are kept
#
# The trained generators are unconstrained float32 arrays, yet every $Q_j$ is orthogonal:
# to float32 precision when computed from them in float32, and to bfloat16 precision as
# used in the bfloat16 forward pass (`layer.rotation()`). The learned rotations are also
# close to the teacher's $Q^\ast$ (they started at $I$).

# %%
orthogonality_f32, orthogonality_bf16, teacher_distance, initial_distance = [], [], [], []
for layer, q_star in zip(model.layers, teacher_rotations, strict=True):
    eye = jnp.eye(q_star.shape[-1])
    q32 = jexpm.orthogonal(layer.s[...])  # from the float32 generators
    q16 = layer.rotation().astype(jnp.float32)  # what the bfloat16 forward pass uses
    orthogonality_f32.append(float(jnp.abs(q32.mT @ q32 - eye).max()))
    orthogonality_bf16.append(float(jnp.abs(q16.mT @ q16 - eye).max()))
    teacher_distance.append(float(jnp.abs(q32 - q_star).max()))
    initial_distance.append(float(jnp.abs(eye - q_star).max()))
    print(
        f"layer {layer.kernel.shape}: max |QᵀQ - I| {orthogonality_f32[-1]:.1e} (float32), "
        f"{orthogonality_bf16[-1]:.1e} (bfloat16); max |Q - Q*| {initial_distance[-1]:.2f} "
        f"-> {teacher_distance[-1]:.3f}"
    )

# %% [markdown]
# A rotation of the output columns does not change the singular values of a kernel. Here
# they are compared before and after fine-tuning, with the fine-tuned kernel
# $W \operatorname{blockdiag}(Q)$ formed in float32 (differences relative to the largest
# singular value).

# %%
singular_value_change = []
fig, axes = plt.subplots(1, len(model.layers), figsize=(11, 3))
for ax, layer in zip(axes, model.layers, strict=True):
    w = layer.kernel[...]  # the frozen pretrained kernel, float32
    w_tuned = rotate_columns(w, jexpm.orthogonal(layer.s[...]))
    sv, sv_tuned = jnp.linalg.svd(w, compute_uv=False), jnp.linalg.svd(w_tuned, compute_uv=False)
    singular_value_change.append(float(jnp.abs(sv_tuned - sv).max() / sv.max()))
    ax.plot(sv, "o", label="pretrained W")
    ax.plot(sv_tuned, ".", label="fine-tuned W blockdiag(Q)")
    ax.set(title=f"kernel {w.shape}, change {singular_value_change[-1]:.0e}", xlabel="index")
axes[0].set_ylabel("singular value")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Merging for deployment
#
# After fine-tuning, `merged_kernel()` folds the rotation into the kernel, so a plain
# `nnx.Linear` (here computing in bfloat16, like the adapter) reproduces the fine-tuned
# model with no adapter overhead.

# %%
deployed = nnx.clone(pretrained)
for linear, layer in zip(deployed.layers, model.layers, strict=True):
    linear.kernel[...] = layer.merged_kernel()  # W blockdiag(Q), rounded to bfloat16
    linear.dtype = jnp.bfloat16
merge_difference = float(jnp.abs(deployed(x) - model(x)).max())
print(f"deployed plain MLP vs OFT model: max |difference| = {merge_difference:.1e}")

# %% [markdown]
# ## Checks
#
# The last cell asserts the facts shown above, so that running this notebook is also a test.

# %%
assert all(np.isfinite(losses)) and all(np.isfinite(losses_f32))
assert losses[-20:].mean() < 0.01 * losses[0], (losses[0], losses[-20:].mean())
assert losses[-20:].mean() < 10 * losses_f32[-20:].mean()  # bfloat16 about as good as float32
assert max(orthogonality_f32) < 1e-5, orthogonality_f32
assert max(orthogonality_bf16) < 2e-2, orthogonality_bf16
assert all(d < 0.5 * d0 for d, d0 in zip(teacher_distance, initial_distance, strict=True))
assert max(singular_value_change) < 1e-5, singular_value_change
assert merge_difference < 1e-2, merge_difference
print("All checks passed.")
