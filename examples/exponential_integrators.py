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
# # Exponential integrators with `jexpm.phi_multiply`
#
# A stiff semilinear problem $u' = Au + N(u)$ has a linear part $A$ whose large negative
# eigenvalues force explicit methods to tiny steps. Exponential integrators treat $A$
# exactly through the $\varphi$-functions, $\varphi_k(z) = \sum_j z^j/(j+k)!$
# ([Hochbruck and Ostermann 2010](https://doi.org/10.1017/S0962492910000048)):
#
# * exponential Euler: $u_{n+1} = e^{hA}u_n + h\,\varphi_1(hA)\,N(u_n)$ (order 1);
# * ETDRK2 ([Cox and Matthews 2002](https://doi.org/10.1006/jcph.2002.6995)):
#   $a = e^{hA}u_n + h\varphi_1(hA)N(u_n)$,
#   $u_{n+1} = a + h\,\varphi_2(hA)\,(N(a) - N(u_n))$ (order 2);
# * ETDRK4 (Cox and Matthews 2002): three stages at $h/2$, then
#   $u_{n+1} = e^{hA}u_n + h[f_1 N(u_n) + 2 f_2 (N(a) + N(b)) + f_3 N(c)]$ with
#   $f_1 = \varphi_1 - 3\varphi_2 + 4\varphi_3$, $f_2 = \varphi_2 - 2\varphi_3$,
#   $f_3 = 4\varphi_3 - \varphi_2$ at $hA$ (order 4 for non-stiff problems).
#
# Each step is one call of `jexpm.phi_multiply(A, [b_0, b_1, b_2], t=h)`
# $= \sum_k h^k \varphi_k(hA) b_k$, which applies the $\varphi_k$ to vectors without
# forming them (the augmented matrix of Al-Mohy and Higham 2011, computed by the action).
#
# The problem: the 1-D Allen-Cahn equation $u_t = \epsilon u_{xx} + u - u^3$ on
# $(-1, 1)$, $u = 0$ at both ends, $\epsilon = 0.01$, by second differences on 200
# interior points ($\|A\|_1 \approx 400$), from the initial data of Kassam and Trefethen
# (2005), whose end values $\pm 1$ the zero boundary condition pulls to 0. We integrate
# to $T = 2$ with the exponential methods and with diffrax's implicit `Kvaerno5`,
# compare error against a tight reference with wall time (a work-precision plot), and
# differentiate a loss of the final state through the whole integration in both modes.
# On Colab the first cell installs jexpm; elsewhere it does nothing.

# %%
import sys

if "google.colab" in sys.modules:  # Colab only: install jexpm and the notebook extras
    # %pip install -q "jexpm[notebooks] @ git+https://github.com/jexpm/jexpm"
    pass

# %%
import functools
import itertools
import time

import diffrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jexpm

jax.config.update("jax_enable_x64", True)

n, eps, T = 200, 0.01, 2.0
x = jnp.linspace(-1, 1, n + 2)[1:-1]
dx = 2 / (n + 1)
A = (
    eps
    / dx**2
    * (jnp.diag(-2 * jnp.ones(n)) + jnp.diag(jnp.ones(n - 1), 1) + jnp.diag(jnp.ones(n - 1), -1))
)
u0 = 0.53 * x + 0.47 * jnp.sin(-1.5 * jnp.pi * x)


def nonlinear(u):
    return u - u**3


print(f"||A||_1 = {float(jnp.abs(A).sum(0).max()):.0f}")


# %% [markdown]
# ## The exponential methods, one `phi_multiply` per stage


# %%
def exponential_euler(u, h, A=A):
    return jexpm.phi_multiply(A, jnp.stack([u, nonlinear(u)]), t=h)


def etdrk2(u, h, A=A):
    a = jexpm.phi_multiply(A, jnp.stack([u, nonlinear(u)]), t=h)
    return jexpm.phi_multiply(
        A, jnp.stack([u, nonlinear(u), (nonlinear(a) - nonlinear(u)) / h]), t=h
    )


def etdrk4(u, h, A=A):
    nu = nonlinear(u)
    a = jexpm.phi_multiply(A, jnp.stack([u, nu]), t=h / 2)
    na = nonlinear(a)
    b = jexpm.phi_multiply(A, jnp.stack([u, na]), t=h / 2)
    nb = nonlinear(b)
    c = jexpm.phi_multiply(A, jnp.stack([a, 2 * nb - nu]), t=h / 2)
    nc = nonlinear(c)
    b2 = (-3 * nu + 2 * (na + nb) - nc) / h
    b3 = 4 * (nu - (na + nb) + nc) / h**2
    return jexpm.phi_multiply(A, jnp.stack([u, nu, b2, b3]), t=h)


def integrate(method, steps, u0=u0, A=A):
    """``steps`` steps of ``method`` from 0 to T (``steps`` may be traced: one program)."""
    h = T / steps
    return jax.lax.fori_loop(0, steps, lambda i, u: method(u, h, A), u0)


def solve_diffrax(rtol, u0=u0, solver=diffrax.Kvaerno5):
    term = diffrax.ODETerm(lambda t, u, args: A @ u + nonlinear(u))
    sol = diffrax.diffeqsolve(
        term, solver(), 0.0, T, 1e-3, u0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol),
        max_steps=100_000,
    )  # fmt: skip
    return sol.ys[-1]


# The reference: diffrax's explicit 8th-order Dopri8, at a tolerance far below every
# error measured here. This stiffness is mild for it (stability needs about 230 steps to
# T = 2), where Kvaerno5 at rtol = 1e-10 takes 750 implicit steps, 40 times the time,
# for the same digits (the two agree to 2e-13).
reference = jax.jit(functools.partial(solve_diffrax, 1e-12, solver=diffrax.Dopri8))()
print("reference: Dopri8 at rtol = atol = 1e-12")


# %% [markdown]
# ## Work and precision
#
# Each method is compiled once (the number of steps, or diffrax's tolerance, is an
# argument), then every setting is timed (median of three calls after a first one).


# %%
def timed(fn):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


results = {}
for name, method in (
    ("exponential Euler", exponential_euler),
    ("ETDRK2", etdrk2),
    ("ETDRK4", etdrk4),
):
    rows = []
    run = jax.jit(functools.partial(integrate, method))  # compiled once for every count
    for steps in (10, 20, 40, 80, 160):
        seconds, u = timed(functools.partial(run, jnp.asarray(steps)))
        rows.append((steps, seconds, float(jnp.max(jnp.abs(u - reference)))))
    results[name] = rows
rows = []
run = jax.jit(solve_diffrax)  # compiled once for every tolerance
for rtol in (1e-3, 1e-4, 1e-5):
    seconds, u = timed(functools.partial(run, jnp.asarray(rtol)))
    rows.append((rtol, seconds, float(jnp.max(jnp.abs(u - reference)))))
results["diffrax Kvaerno5"] = rows

for name, rows in results.items():
    print(name)
    for setting, seconds, error in rows:
        print(f"  {setting:>8g}  {seconds * 1e3:8.2f} ms  error {error:.2e}")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for name, rows in results.items():
    _, seconds, errors = zip(*rows, strict=True)
    right.loglog(seconds, errors, "o-", label=name)
right.set_xlabel("wall time (s)")
right.set_ylabel("max error at T")
right.set_title("work-precision")
right.legend()
left.plot(x, u0, label="u(0)")
left.plot(x, reference, label=f"u({T:g})")
left.set_xlabel("x")
left.set_title("Allen-Cahn, ε = 0.01")
left.legend()
fig.tight_layout()
fig.savefig("work_precision.png", dpi=100)
plt.show()


# %% [markdown]
# ## Gradients through the whole integration
#
# A loss of the final state, differentiated with respect to the initial state in reverse
# mode (`jax.grad`) and forward mode (`jax.jvp`): both go through every `phi_multiply`.


# %%
def loss(u_init):
    return jnp.sum(integrate(etdrk2, 40, u0=u_init) ** 2) * dx


direction = jnp.sin(jnp.pi * x) + 0.3 * x
grad = jax.jit(jax.grad(loss))(u0)
_, forward = jax.jit(lambda u: jax.jvp(loss, (u,), (direction,)))(u0)
step = 1e-6
central = (loss(u0 + step * direction) - loss(u0 - step * direction)) / (2 * step)
print(f"reverse {float(grad @ direction):.10f}  forward {float(forward):.10f}  "
      f"central difference {float(central):.10f}")  # fmt: skip

# %% [markdown]
# ## What this shows

# %%
euler = [error for _, _, error in results["exponential Euler"]]
second = [error for _, _, error in results["ETDRK2"]]
# Orders 1 and 2: halving h divides the error by about 2 and 4.
assert all(1.6 < a / b < 2.6 for a, b in itertools.pairwise(euler))
assert all(3.0 < a / b < 5.0 for a, b in itertools.pairwise(second))
assert second[-1] < 1e-5 and euler[-1] < 1e-2
fourth = [error for _, _, error in results["ETDRK4"]]
assert all(a > b for a, b in itertools.pairwise(fourth)) and fourth[-1] < 1e-7
# The reference is tight: diffrax's tightest run agrees with it.
assert results["diffrax Kvaerno5"][-1][2] < 1e-6
# Both derivative modes agree with each other and with a central difference.
assert abs(float(grad @ direction) - float(forward)) < 1e-8 * abs(float(forward))
assert abs(float(forward) - float(central)) < 1e-5 * abs(float(forward))
