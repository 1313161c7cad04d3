"""Heatmap normalization, colormaps, overlays and image grids (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import InputError  # noqa: E402


def scale_by_percentile(heatmap: np.ndarray, signed: bool = False, percentile: float = 99.0) -> np.ndarray:
    """Scale heatmaps for display, per map: divide by the ``percentile`` of ``|h|`` and clip.

    This is a display scaling, not Adebayo et al.'s normalization
    (:func:`cnnvis_eval.metrics.similarity.normalize_abs` / ``normalize_signed``, used by
    the similarity metrics): it keeps zero at zero (no shift by the map's minimum), falls
    back to ``max |h|`` when the percentile is 0, takes no channel sums, and scales signed
    maps by the percentile of ``|h|`` (not by ``max |h|``), clipping to [-1, 1].

    Parameters
    ----------
    heatmap : array, shape (H, W) or (N, H, W)
    signed : bool
        False: ``|h| / p(|h|)`` clipped to [0, 1].
        True: ``h / p(|h|)`` clipped to [-1, 1].

    Returns
    -------
    ndarray float32, same shape.
    """
    h = np.asarray(heatmap, dtype=np.float64)
    single = h.ndim == 2
    if single:
        h = h[None]
    if h.ndim != 3:
        raise InputError(f"heatmap must have shape (H, W) or (N, H, W), got {np.shape(heatmap)}")
    mag = np.abs(h)
    scale = np.percentile(mag.reshape(len(h), -1), percentile, axis=1)[:, None, None]
    scale = np.where(scale > 0, scale, mag.reshape(len(h), -1).max(1)[:, None, None])
    scale = np.where(scale > 0, scale, 1.0)
    out = np.clip(h / scale, -1, 1) if signed else np.clip(mag / scale, 0, 1)
    out = out.astype(np.float32)
    return out[0] if single else out


def to_rgb(heatmap: np.ndarray, signed: bool = False, cmap: str | None = None) -> np.ndarray:
    """Color an (H, W) map scaled by :func:`scale_by_percentile`: float RGB (H, W, 3) in [0, 1]."""
    h = scale_by_percentile(heatmap, signed=signed)
    cm = plt.get_cmap(cmap or ("bwr" if signed else "jet"))
    return cm((h + 1) / 2 if signed else h)[..., :3].astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, signed: bool = False) -> np.ndarray:
    """Blend a colored heatmap over an image.

    Parameters
    ----------
    image : array (H, W, 3), uint8 or float in [0, 255]
    heatmap : array (H, W)

    Returns
    -------
    ndarray float32 (H, W, 3) in [0, 1].
    """
    img = np.asarray(image, dtype=np.float32)
    if img.shape[:2] != np.shape(heatmap):
        raise InputError(f"image {img.shape[:2]} and heatmap {np.shape(heatmap)} differ in size")
    img = np.clip(img / 255.0, 0, 1)
    return ((1 - alpha) * img + alpha * to_rgb(heatmap, signed=signed)).astype(np.float32)


def save_grid(
    path: str | Path,
    images: Sequence[np.ndarray],
    rows: Mapping[str, Sequence[np.ndarray]],
    signed: Mapping[str, bool] | None = None,
    col_titles: Sequence[str] | None = None,
    cell: float = 1.6,
    title: str | None = None,
) -> Path:
    """Write a PNG grid: first row the images, then one row of heatmaps per method.

    Parameters
    ----------
    images : sequence of (H, W, 3) arrays in [0, 255]
    rows : mapping row name -> sequence of (H, W) heatmaps (one per image; None = n/a)
    signed : mapping row name -> bool (signed colormap)
    """
    signed = signed or {}
    n_rows, n_cols = 1 + len(rows), len(images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 1.2, cell * n_rows), squeeze=False)
    for j, img in enumerate(images):
        axes[0, j].imshow(np.clip(np.asarray(img) / 255.0, 0, 1))
        if col_titles:
            axes[0, j].set_title(col_titles[j], fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=8)
    for i, (name, maps) in enumerate(rows.items(), start=1):
        for j, h in enumerate(maps):
            ax = axes[i, j]
            if h is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                s = signed.get(name, False)
                ax.imshow(scale_by_percentile(h, signed=s), cmap="bwr" if s else "jet", vmin=-1 if s else 0, vmax=1)
        axes[i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
