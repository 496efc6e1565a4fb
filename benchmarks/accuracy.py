"""Products and accuracy on a fixed set of matrices.

Total matrix products of opt15, ps and baseline at tol 1e-8 and at the float32 and
float64 defaults, and the relative error of each (and of scipy) against mpmath at 50
digits, plotted against the condition number of exp at A times the unit roundoff, in
the style of the Taylor 15+ paper's accuracy figure.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from .harness import Section, markdown_table, mp_expm, records

_TOLERANCES = (
    ("float64, tol 1e-8", np.float64, 1e-8),
    ("float64, default (2^-53)", np.float64, None),
    ("float32, default (2^-24)", np.float32, None),
)


def matrix_set(seed: int = 0, count: int = 64) -> list[np.ndarray]:
    """``count`` fixed test matrices of sizes 4 to 12 at 1-norms from 1e-3 to 300.

    Four kinds at each of ``count // 4`` norms: Gaussian, strongly non-normal
    triangular, skew-symmetric (rotation generators) and diagonal plus strictly upper
    triangular.
    """
    rng = np.random.default_rng(seed)
    out = []
    norms = np.logspace(-3, 2.5, count // 4)
    for i, norm in enumerate(norms):
        n = 4 + (i % 9)
        for kind in range(4):
            a = rng.standard_normal((n, n))
            if kind == 1:
                a = np.triu(a) + 10 * np.triu(rng.standard_normal((n, n)), 1)
            elif kind == 2:
                a = a - a.T
            elif kind == 3:
                a = np.diag(rng.standard_normal(n)) + np.triu(rng.standard_normal((n, n)), 1) * 5
            out.append(a * norm / np.abs(a).sum(axis=0).max())
    return out


def run(out_png: Path, count: int = 64) -> Section:
    """Products per method and tolerance; accuracy against conditioning.

    Args:
      out_png: the accuracy figure to write.
      count: matrices in the set (:func:`matrix_set`).

    Returns:
      Two tables (products, errors) and the figure.
    """
    import jax
    import scipy.linalg

    import jexpm
    from flows import _plotting

    mats = matrix_set(count=count)
    rows = []
    with jax.enable_x64(True):
        for label, dtype, tol in _TOLERANCES:
            row: list = [label]
            for method in jexpm.METHODS:
                total = 0
                for a in mats:
                    _, info = jexpm.expm(a.astype(dtype), tol=tol, method=method, return_info=True)
                    total += int(info.products)
                row.append(total)
            rows.append(row)
        refs = [mp_expm(a) for a in mats]
        cond_u = [scipy.linalg.expm_cond(a) * 2.0**-53 for a in mats]
        errors: dict[str, list[float]] = {m: [] for m in (*jexpm.METHODS, "scipy")}
        for a, ref in zip(mats, refs, strict=True):
            den = np.abs(ref).sum(axis=0).max()
            for m in errors:
                if m == "scipy":
                    x = scipy.linalg.expm(a)
                else:
                    x = np.asarray(jexpm.expm(a, method=m))  # pyright: ignore[reportArgumentType]
                errors[m].append(float(np.abs(x - ref).sum(axis=0).max() / den))
    order = np.argsort(cond_u)
    curves = {
        m: ([cond_u[i] for i in order], [max(e[i], 1e-18) for i in order])
        for m, e in errors.items()
    }
    curves["cond(exp, A) * u"] = ([cond_u[i] for i in order], [cond_u[i] for i in order])
    out_png.parent.mkdir(parents=True, exist_ok=True)
    _plotting.plot_curves(
        out_png,
        curves,
        xlabel="cond(exp, A) · u  (u = 2^-53)",
        ylabel="relative error (1-norm)",
        title=f"{len(mats)} matrices, float64, reference mpmath 50 digits",
        logx=True,
        logy=True,
    )
    within = {
        m: sum(e[i] <= 10 * max(cond_u[i], 2.0**-53) for i in range(len(mats)))
        for m, e in errors.items()
    }
    acc_headers = ["method", "median", "max", "within 10·max(cond·u, u)"]
    acc_rows = [
        [m, f"{statistics.median(e):.1e}", f"{max(e):.1e}", f"{within[m]}/{len(mats)}"]
        for m, e in errors.items()
    ]
    headers = ["tolerance", *jexpm.METHODS]
    return Section(
        f"Total matrix products over the {len(mats)} matrices of "
        "`benchmarks.accuracy.matrix_set`:\n\n"
        + markdown_table(headers, rows)
        + "\n\nfloat64 relative error against mpmath (50 digits):\n\n"
        + markdown_table(acc_headers, acc_rows)
        + f"\n\n![accuracy against conditioning]({out_png.name})",
        {"products": records(headers, rows), "errors": records(acc_headers, acc_rows)},
    )
