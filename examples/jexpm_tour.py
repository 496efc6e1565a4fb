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
# # A tour of jexpm
#
# [jexpm](https://github.com/jexpm/jexpm) computes matrix exponentials in JAX. It evaluates
# Taylor approximants of order 1, 2, 4, 8 and 15+ with Sastre's formulas, picks the order and
# the number of squarings **on device** for every matrix of a batch (no host synchronisation,
# no recompilation when the values change), and differentiates the approximant it computed in
# forward and reverse mode, with memory that does not grow with the squarings.
#
# This notebook shows:
#
# 1. `jexpm.expm` with `jax.jit`, `jax.vmap` and `jax.grad`;
# 2. what it did for each matrix (`return_info=True`);
# 3. a few identities;
# 4. the `tol` and `method` knobs, in a small accuracy-versus-speed comparison with
#    `jax.scipy.linalg.expm`;
# 5. the related functions `expm_frechet`, `phi1` and `expm_lowrank`.
#
# Sizes are small, so the whole notebook runs in well under a minute on a laptop CPU.
# On Colab the first cell installs jexpm; elsewhere it does nothing.

# %%
import sys

if "google.colab" in sys.modules:  # Colab only: install jexpm and the notebook extras
    # %pip install -q "jexpm[notebooks] @ git+https://github.com/jexpm/jexpm"
    print("jexpm installed")

# %%
import functools
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg

import jexpm

print(f"jax {jax.__version__} on {jax.devices()[0].platform}, jexpm {jexpm.__version__}")

# %% [markdown]
# ## 1. A first exponential
#
# The exponential of a rotation generator is a rotation:
# $\exp\begin{pmatrix}0 & t\\ -t & 0\end{pmatrix}
# = \begin{pmatrix}\cos t & \sin t\\ -\sin t & \cos t\end{pmatrix}$.
# Inputs are float32 by default, and so is the result.

# %%
t = 0.7
a = jnp.array([[0.0, t], [-t, 0.0]])
rotation = jexpm.expm(a)
exact = jnp.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
print(rotation)
rotation_error = float(jnp.abs(rotation - exact).max())
print(f"max |error| = {rotation_error:.1e}")

# %% [markdown]
# ## 2. Batches, `jit`, `vmap` and `grad`
#
# `jexpm.expm` takes any `(..., n, n)` array and exponentiates each matrix. It is jitted
# already; wrap it in your own `jax.jit` to fuse it with the rest of your code. `jax.vmap`
# gives the same result at the same cost as passing the batch directly.

# %%
key_batch, key_dir, key_base, key_lr = jax.random.split(jax.random.key(0), 4)
batch = jax.random.normal(key_batch, (512, 8, 8)) / 4  # 512 random 8x8 matrices, float32

x_batch = jax.jit(jexpm.expm)(batch)
x_vmap = jax.jit(jax.vmap(jexpm.expm))(batch)
vmap_difference = float(jnp.abs(x_batch - x_vmap).max())
print(x_batch.shape, x_batch.dtype, f"| batch vs vmap: max |difference| = {vmap_difference:.1e}")

# %% [markdown]
# Reverse-mode derivatives work as usual (also inside `jit` and `vmap`). Here the gradient
# of $\sum_{ij} e^{A}_{ij}{}^2$ is compared with the one JAX computes through
# `jax.scipy.linalg.expm`.


# %%
def loss(a, expm=jexpm.expm):
    return jnp.sum(expm(a) ** 2)


grad = jax.jit(jax.grad(loss))(batch)
grad_ref = jax.jit(jax.grad(lambda a: loss(a, jax.scipy.linalg.expm)))(batch)
grad_difference = float(jnp.abs(grad - grad_ref).max() / jnp.abs(grad_ref).max())
print(f"gradient vs jax.scipy: max relative difference = {grad_difference:.1e}")

# %% [markdown]
# ## 3. What happened: `return_info=True`
#
# With `return_info=True`, `expm` also returns an `ExpmInfo` with the Taylor **order**, the
# number of **squarings** and the number of matrix **products** used for every matrix.
# Called on one matrix at a time, the order grows with the norm until 15+, then squarings
# take over. All these calls have the same shape, so they share one compiled function: the
# choice is made on device.

# %%
base = jax.random.normal(key_base, (6, 6))
base = base / jnp.abs(base).sum(axis=0).max()  # 1-norm 1
norms = [1e-4, 0.05, 0.5, 2.0, 20.0, 500.0]
for norm in norms:
    _, info = jexpm.expm(norm * base, return_info=True)
    print(
        f"||A||_1 = {norm:6g}: order {int(info.order):2d}, squarings {int(info.squarings):2d}, "
        f"products {int(info.products):2d}"
    )

# %% [markdown]
# In a batch, every member uses the highest order any of them needs (one branch runs for
# the whole batch) but keeps its own number of squarings:

# %%
stacked = jnp.stack([norm * base for norm in norms])
_, info = jexpm.expm(stacked, return_info=True)
print("order     ", info.order)
print("squarings ", info.squarings)
print("products  ", info.products)

# %% [markdown]
# ## 4. Identities
#
# A few facts that hold for every square matrix, checked on the batch from section 2:
# $e^{A} e^{-A} = I$, $\det e^{A} = e^{\operatorname{tr} A}$, and
# $e^{A + B} = e^{A} e^{B}$ when $A$ and $B$ commute (here $B = A^2$). The exponential of a
# skew-symmetric matrix is orthogonal; `jexpm.orthogonal(s)` builds $e^{S - S^T}$ from any
# square `s`.

# %%
eye = jnp.eye(8)
inverse_error = float(jnp.abs(jexpm.expm(batch) @ jexpm.expm(-batch) - eye).max())
det_error = float(
    jnp.abs(jnp.linalg.det(x_batch) / jnp.exp(jnp.trace(batch, axis1=-2, axis2=-1)) - 1).max()
)
square = batch @ batch
commute_error = float(
    jnp.abs(jexpm.expm(batch + square) - x_batch @ jexpm.expm(square)).max()
    / jnp.abs(jexpm.expm(batch + square)).max()
)
q = jexpm.orthogonal(batch)
orthogonality_error = float(jnp.abs(q.mT @ q - eye).max())
print(f"exp(A) exp(-A) = I        max |error|   {inverse_error:.1e}")
print(f"det exp(A) = exp(tr A)    max rel error {det_error:.1e}")
print(f"exp(A + A²) = e^A e^(A²)  max rel error {commute_error:.1e}")
print(f"QᵀQ = I, Q = exp(S - Sᵀ)  max |error|   {orthogonality_error:.1e}")

# %% [markdown]
# ## 5. Accuracy versus speed: `tol` and `method`
#
# * `tol` bounds the truncation error of the scaled Taylor approximant. The default is the
#   unit roundoff of the dtype ($2^{-24}$ for float32); a looser `tol` such as `1e-3` lets
#   jexpm use a lower order and fewer products, which is often enough for training.
# * `method` picks how the polynomial is evaluated: `"opt15"` (Sastre's formulas, the
#   default), `"ps"` (Paterson–Stockmeyer) or `"baseline"` (the plain Taylor loop that the
#   paper compares against; for comparison only).
#
# Below, 1024 random float32 12x12 matrices of 1-norm 2 are exponentiated with each setting
# and with `jax.scipy.linalg.expm`. The error is the largest normwise relative error
# (1-norm) over the batch against `scipy.linalg.expm` in float64. The cost is shown twice:
# as matrix products per matrix (exact, from `return_info`) and as time. **Timings are
# illustrative**: medians of a few calls of the jitted function on whatever machine runs
# this notebook; small CPU batches like this one are noisy.

# %%
a32 = jax.random.normal(jax.random.key(1), (1024, 12, 12))
a32 = 2 * a32 / jnp.abs(a32).sum(axis=-2).max(axis=-1, keepdims=True)[..., None]  # 1-norm 2
reference = scipy.linalg.expm(np.asarray(a32, dtype=np.float64))  # float64 reference


def max_rel_error(x):
    diff = np.abs(np.asarray(x, dtype=np.float64) - reference).sum(axis=-2).max(axis=-1)
    return float(np.max(diff / np.abs(reference).sum(axis=-2).max(axis=-1)))


def median_ms(f, x, repeats=15):
    jax.block_until_ready(f(x))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


tols = [1e-1, 1e-2, 1e-3, None]
results = {}  # (method, tol) -> (ms, error, mean products)
for method in jexpm.METHODS:
    for tol in tols:
        f = functools.partial(jexpm.expm, tol=tol, method=method, return_info=True)
        x, info = f(a32)
        results[method, tol] = (median_ms(f, a32), max_rel_error(x), float(info.products.mean()))
jsp_expm = jax.jit(jax.scipy.linalg.expm)
jsp_ms, jsp_error = median_ms(jsp_expm, a32), max_rel_error(jsp_expm(a32))

print(f"{'method':9s} {'tol':>8s} {'products':>9s} {'error':>9s} {'ms':>7s}")
for (method, tol), (ms, error, products) in results.items():
    print(f"{method:9s} {tol or 'default'!s:>8s} {products:9.2f} {error:9.1e} {ms:7.2f}")
print(f"{'jax.scipy':9s} {'':>8s} {'':>9s} {jsp_error:9.1e} {jsp_ms:7.2f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
styles = {"opt15": ("o", (5, -10)), "ps": ("s", (5, 4)), "baseline": ("^", (5, 4))}
for method, (marker, offset) in styles.items():
    ms, errors, products = zip(*(results[method, tol] for tol in tols), strict=True)
    axes[0].plot(products, errors, marker=marker, label=f"jexpm {method}")
    axes[1].plot(ms, errors, marker=marker, label=f"jexpm {method}")
    labels = {}  # label the points with their tol, once per point
    for tol, point in zip(tols, zip(products, errors, strict=True), strict=True):
        labels.setdefault(point, []).append(f"{tol:g}" if tol else "default")
    for point, text in labels.items():
        axes[0].annotate(
            ", ".join(text), point, fontsize=7, textcoords="offset points", xytext=offset
        )
axes[1].plot([jsp_ms], [jsp_error], "k*", markersize=12, label="jax.scipy.linalg.expm")
for ax in axes:
    ax.axhline(2.0**-24, color="gray", lw=0.8, ls="--", label="float32 unit roundoff")
    ax.set_yscale("log")
axes[0].set(xlabel="matrix products per matrix", ylabel="max relative error vs float64")
axes[1].set(xlabel="median time per call, ms (illustrative)")
axes[1].legend(fontsize=8, loc="upper right")
fig.suptitle("1024 float32 12x12 matrices of 1-norm 2 (labels: tol)")
plt.show()

# %% [markdown]
# At the default `tol`, `opt15` is as accurate as float32 allows, with fewer products than
# Paterson–Stockmeyer and the baseline loop. A looser `tol` saves products. For `opt15` and
# `ps`, `tol` bounds the truncation error of the scaled approximant and the actual error is
# often much smaller; the baseline stops adding Taylor terms once a term falls below `tol`,
# which is not a bound, and its errors end up above it.

# %% [markdown]
# ## 6. Related functions
#
# **`expm_frechet(a, e)`** returns $e^{A}$ and the Fréchet derivative
# $L(A, E) = \frac{d}{dt} e^{A + tE}\big|_{t=0}$, the forward-mode derivative: the same
# thing `jax.jvp(jexpm.expm, ...)` computes. Here it is checked against `jax.jvp` of
# `jax.scipy.linalg.expm` and of `jexpm.expm`:

# %%
direction = jax.random.normal(key_dir, batch.shape)
x, frechet = jexpm.expm_frechet(batch, direction)
_, frechet_ref = jax.jvp(jax.scipy.linalg.expm, (batch,), (direction,))
frechet_error = float(jnp.abs(frechet - frechet_ref).max() / jnp.abs(frechet_ref).max())
print(f"L(A, E) vs jax.jvp(jax.scipy.linalg.expm): max relative difference {frechet_error:.1e}")
_, tangent = jax.jvp(jexpm.expm, (batch,), (direction,))
print("jax.jvp(jexpm.expm) equals expm_frechet:", bool(jnp.allclose(tangent, frechet, rtol=1e-5)))

# %% [markdown]
# **`phi1(a)`** is $\varphi_1(A) = \sum_k A^k / (k+1)!$, so that $e^{A} = I + A\,\varphi_1(A)$
# (it also solves $y' = Ay + b$ exactly: $y(h) = e^{hA} y_0 + h\,\varphi_1(hA)\,b$).
#
# **`expm_lowrank(u, v)`** computes $e^{UV} = I + U \varphi_1(VU) V$ for tall `u` (n, r)
# and wide `v` (r, n): only an r x r matrix is exponentiated.

# %%
phi = jexpm.phi1(batch)
phi1_error = float(jnp.abs(eye + batch @ phi - x_batch).max())
print(f"I + A phi1(A) = exp(A): max |error| {phi1_error:.1e}")

key_u, key_v = jax.random.split(key_lr)
u = jax.random.normal(key_u, (300, 2)) / 10
v = jax.random.normal(key_v, (2, 300)) / 10
lowrank = jexpm.expm_lowrank(u, v)  # exponentiates a 2x2 matrix
full = jexpm.expm(u @ v)  # exponentiates a 300x300 matrix
lowrank_error = float(jnp.abs(lowrank - full).max())
print(f"expm_lowrank(u, v) vs expm(u @ v), 300x300 of rank 2: max |difference| {lowrank_error:.1e}")

# %% [markdown]
# ## Checks
#
# The last cell asserts the facts shown above, so that running this notebook is also a test.

# %%
assert rotation_error < 1e-6
assert vmap_difference < 1e-6
assert grad_difference < 1e-5
assert inverse_error < 1e-5 and det_error < 1e-5 and commute_error < 1e-5
assert orthogonality_error < 1e-5
default_error = results["opt15", None][1]
assert default_error < 1e-6, default_error  # float32-accurate at the default tol
assert default_error <= 2 * jsp_error, (default_error, jsp_error)
assert results["opt15", 1e-1][2] < results["opt15", None][2]  # looser tol: fewer products
products = {method: results[method, None][2] for method in jexpm.METHODS}
assert products["opt15"] < products["ps"] < products["baseline"], products
assert frechet_error < 1e-5 and phi1_error < 1e-5 and lowrank_error < 1e-5
print("All checks passed.")
