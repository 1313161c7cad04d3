"""Report figures (matplotlib, Agg backend), each written as a PNG file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..viz import normalize  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def heatmap_grid(
    path: str | Path,
    images: Mapping[str, np.ndarray],
    maps: Mapping[tuple[str, str], np.ndarray | None],
    methods: Sequence[str],
    models: Sequence[str],
    signed: Mapping[str, bool] | None = None,
    title: str = "",
    col_labels: Mapping[str, str] | None = None,
) -> Path:
    """The study's figure layout: rows methods, columns architectures, for one image and neuron.

    Parameters
    ----------
    images : model -> (H, W, 3) image in [0, 255] as that model saw it
    maps : (method, model) -> (H, W) heatmap, or None where the cell does not apply / failed
    col_labels : model -> column title (e.g. naming the neuron explained)
    """
    signed = signed or {}
    col_labels = col_labels or {}
    nr, nc = len(methods) + 1, len(models)
    fig, axes = plt.subplots(nr, nc, figsize=(1.35 * nc + 1.3, 1.35 * nr + 0.4), squeeze=False)
    for j, m in enumerate(models):
        img = images.get(m)
        if img is not None:
            axes[0, j].imshow(np.clip(np.asarray(img, np.float32) / 255.0, 0, 1))
        axes[0, j].set_title(col_labels.get(m, m), fontsize=7)
    axes[0, 0].set_ylabel("image", fontsize=7)
    for i, meth in enumerate(methods, start=1):
        s = bool(signed.get(meth, False))
        for j, m in enumerate(models):
            h = maps.get((meth, m))
            ax = axes[i, j]
            if h is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=7, color="0.4",
                        transform=ax.transAxes)
                ax.set_facecolor("0.93")
            else:
                ax.imshow(normalize(h, signed=s), cmap="bwr" if s else "jet", vmin=-1 if s else 0, vmax=1)
        axes[i, 0].set_ylabel(meth, fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def agreement_heatmap(path: str | Path, matrix: pd.DataFrame, title: str = "") -> Path:
    """A method x method agreement matrix (values in [-1, 1]) as an annotated heatmap."""
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(0.45 * n + 2.2, 0.45 * n + 1.6))
    im = ax.imshow(matrix.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(n), matrix.index, fontsize=7)
    if n <= 24:
        for i in range(n):
            for j in range(n):
                v = matrix.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=5.5,
                            color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def randomization_curves(path: str | Path, curves: pd.DataFrame, metric: str | None = None) -> Path:
    """Cascading-randomization curves: one panel per method, one line per model.

    ``curves`` has columns ``method, model, step, layer, metric, value`` (value
    averaged over images here); step 0 is the trained model.
    """
    df = curves if metric is None else curves[curves["metric"] == metric]
    methods = sorted(df["method"].unique())
    ncol = min(4, max(1, len(methods)))
    nrow = int(np.ceil(len(methods) / ncol)) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.3 * nrow), squeeze=False, sharey=True)
    for k, meth in enumerate(methods):
        ax = axes[k // ncol, k % ncol]
        sub = df[df["method"] == meth]
        for model, g in sub.groupby("model"):
            g = g.groupby("step")["value"].mean()
            ax.plot(g.index, g.values, marker=".", label=model)
        ax.set_title(meth, fontsize=8)
        ax.set_ylim(-0.2, 1.05)
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_xlabel("layers re-initialized (top down)", fontsize=7)
        ax.tick_params(labelsize=7)
    for k in range(len(methods), nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    if methods:
        axes[0, 0].set_ylabel("similarity to trained", fontsize=7)
        axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def cost_chart(path: str | Path, table: pd.DataFrame) -> Path:
    """Horizontal bars of the cost ratio per method (one bar group per model, log scale)."""
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(table) * max(1, len(table.columns)) ** 0.5 + 1.2))
    table.sort_values(table.columns[0]).plot.barh(ax=ax, logx=True, width=0.8)
    ax.axvline(1.0, color="k", lw=0.7)
    ax.set_xlabel("time / one forward+backward pass", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)
