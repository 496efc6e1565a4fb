"""Orthogonal fine-tuning (OFT) of a frozen MLP in bfloat16 with ``flows.OrthogonalLinear``.

A small MLP (16 -> 64 -> 64 -> 8) stands in for a pretrained model. The new task is the same
network with the output directions of every layer turned by a random block-diagonal rotation
(angles up to about 1 radian): a change that rotations alone can reach, the case OFT is made
for. Every pretrained weight stays frozen; each ``nnx.Linear`` is wrapped in an
``OrthogonalLinear`` adapter, and only the rotation generators S (2,112 numbers against
5,768 frozen ones) are trained, computing in bfloat16, with Adam. The adapters start as the
identity, so step 0 is the pretrained model's loss on the new task.

The train step is functional (``nnx.split`` once, ``nnx.merge`` inside ``jax.jit``), so the
Python loop only feeds keys. Data are synthetic: fresh Gaussian inputs every step, labelled by
the rotated teacher in float32. Nothing is downloaded.

Run from the repository root (or with ``jexpm`` installed)::

    PYTHONPATH=. python examples/orthogonal_finetune.py
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import jexpm
from flows import OrthogonalLinear

FEATURES = (16, 64, 64, 8)  # input, hidden, hidden, output
BLOCK_SIZE = 16  # rotation blocks; layers narrower than this use one full block
TEACHER_ANGLE = 1.0  # 1-norm of each teacher block's skew generator (bounds its angles)


class MLP(nnx.Module):
    """Plain tanh MLP: the "pretrained" model."""

    def __init__(self, features, *, rngs: nnx.Rngs):
        self.layers = nnx.List(
            nnx.Linear(d_in, d_out, rngs=rngs) for d_in, d_out in itertools.pairwise(features)
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


class OFTMLP(nnx.Module):
    """The same MLP with every linear layer frozen behind an orthogonal adapter."""

    def __init__(self, base: MLP, *, block_size: int, dtype, rngs: nnx.Rngs):
        self.layers = nnx.List(
            OrthogonalLinear.from_linear(
                layer,
                block_size=min(block_size, layer.out_features),
                dtype=dtype,
                rngs=rngs,
            )
            for layer in base.layers
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


def rotated_teacher(base: MLP, key: jax.Array, *, block_size: int, angle: float) -> MLP:
    """A copy of ``base`` whose kernels are W blockdiag(Q*), Q* = exp(S* - S*ᵀ) random."""
    teacher = nnx.clone(base)
    for layer in teacher.layers:
        d_in, d_out = layer.kernel.shape
        b = min(block_size, d_out)
        key, sub = jax.random.split(key)
        s = jax.random.normal(sub, (d_out // b, b, b))
        skew_norm = jnp.abs(s - s.mT).sum(axis=-2).max(axis=-1)
        q = jexpm.orthogonal(s * (angle / skew_norm)[:, None, None])
        w = layer.kernel[...].reshape(d_in, d_out // b, b)
        layer.kernel[...] = jnp.einsum("ikb,kbc->ikc", w, q).reshape(d_in, d_out)
    return teacher


def main(
    steps: int = 300,
    seed: int = 0,
    *,
    batch_size: int = 256,
    learning_rate: float = 3e-2,
    dtype=jnp.bfloat16,
    log_every: int | None = None,
) -> list[float]:
    """Fine-tune the orthogonal adapters; print the loss; return the loss per step."""
    key_base, key_teacher, key_data = jax.random.split(jax.random.key(seed), 3)
    base = MLP(FEATURES, rngs=nnx.Rngs(key_base))  # stands in for a pretrained model
    teacher = rotated_teacher(base, key_teacher, block_size=BLOCK_SIZE, angle=TEACHER_ANGLE)
    model = OFTMLP(base, block_size=BLOCK_SIZE, dtype=dtype, rngs=nnx.Rngs(seed))

    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    n_train = sum(p.size for p in jax.tree.leaves(params))
    n_frozen = sum(p.size for p in jax.tree.leaves(frozen))
    print(f"trainable (S): {n_train}, frozen: {n_frozen}, compute dtype: {jnp.dtype(dtype)}")
    tx = optax.adam(learning_rate)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        x = jax.random.normal(key, (batch_size, FEATURES[0]))
        y = teacher(x)

        def loss_fn(params):
            pred = nnx.merge(graphdef, params, frozen)(x)
            return jnp.mean((pred.astype(jnp.float32) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    log_every = log_every or max(1, steps // 10)
    history = []
    for step, key in enumerate(jax.random.split(key_data, steps)):
        params, opt_state, loss = train_step(params, opt_state, key)
        history.append(float(loss))
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {history[-1]:.3e}")
    print(f"loss: {history[0]:.3e} -> {history[-1]:.3e}")
    return history


if __name__ == "__main__":
    main()
