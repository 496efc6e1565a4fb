"""PNG output: sample grids (Pillow) and line plots and histograms (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def save_grid(path: str | Path, images: np.ndarray, *, pad: int = 2) -> Path:
    """Tile uint8 images (N, H, W, C) into a near-square grid and write a PNG."""
    from PIL import Image

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"save_grid: expected uint8 (N, H, W, 1 or 3), got {images.dtype} {images.shape}"
        )
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = image
    path = Path(path)
    Image.fromarray(grid.squeeze(-1) if c == 1 else grid).save(path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    path: str | Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """Line plot of named (x, y) curves, written as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, (x, y) in curves.items():
        ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_histograms(
    path: str | Path, panels: Mapping[str, Mapping[str, int]], *, title: str = ""
) -> Path:
    """One bar chart per panel of {value: count}, side by side, written as a PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), dpi=120, squeeze=False)
    for ax, (name, counts) in zip(axes[0], panels.items(), strict=True):
        keys = sorted(counts, key=float)
        total = max(sum(counts.values()), 1)
        ax.bar(keys, [counts[k] / total for k in keys])
        ax.set(title=name, ylabel="share")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
