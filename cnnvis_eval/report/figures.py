"""Report figures (matplotlib, Agg backend), each written as a PNG file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402



def _save(fig, path: str | Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a 256-colour (palette) PNG and close it.

    Quantizing the Agg rendering to an adaptive palette makes the files about three times
    smaller (they are embedded in the report as data URIs) at no visible cost for
    colormapped heatmaps, line plots and tables.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the Agg canvas's pixels directly (what savefig(dpi=dpi) renders), without encoding a
    # full-colour PNG only to decode it again: 12 heatmap grids of 39 methods x 5 models
    # took 9.7 s in savefig alone
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    # zlib's default level: Pillow's optimize=True (level 9) took 2.5 s for a run's 19
    # figures against 0.5 s, for files 4% smaller
    Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE).save(path, format="PNG", compress_level=6)
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
    tile: int = 96,
) -> Path:
    """The study's figure layout: rows methods, columns architectures, for one image and neuron.

    Drawn as one mosaic (one ``imshow``, nearest-neighbour, one image pixel per output
    pixel), so a grid of 20+ methods stays quick to render and small to embed.

    Parameters
    ----------
    images : model -> (H, W, 3) image in [0, 255] as that model saw it
    maps : (method, model) -> (H, W) heatmap; absent or None where the cell does not apply
        or failed (drawn as a grey "n/a" tile)
    col_labels : model -> column title (e.g. naming the neuron explained)
    tile : side of each tile in pixels (images and maps are resized to it)
    """
    from skimage.transform import resize

    from ..viz import to_rgb

    signed = signed or {}
    col_labels = col_labels or {}
    gap = 4
    nr, nc = len(methods) + 1, len(models)
    mosaic = np.ones((nr * tile + (nr - 1) * gap, nc * tile + (nc - 1) * gap, 3), np.float32)
    missing = []

    def put(i, j, rgb):
        if rgb.shape[:2] != (tile, tile):
            rgb = resize(rgb, (tile, tile), order=0 if min(rgb.shape[:2]) <= tile else 1, anti_aliasing=False)
        y, x = i * (tile + gap), j * (tile + gap)
        mosaic[y:y + tile, x:x + tile] = np.clip(rgb, 0, 1)

    for j, m in enumerate(models):
        img = images.get(m)
        if img is not None:
            put(0, j, np.asarray(img, np.float32) / 255.0)
        for i, meth in enumerate(methods, start=1):
            h = maps.get((meth, m))
            if h is None:
                put(i, j, np.full((tile, tile, 3), 0.9, np.float32))
                missing.append((i, j))
            else:
                put(i, j, to_rgb(h, signed=bool(signed.get(meth, False))))
    dpi = 100
    left, right, top, bottom = 150, 10, 75 if title else 50, 10
    hpx, wpx = mosaic.shape[:2]
    fig = plt.figure(figsize=((left + wpx + right) / dpi, (top + hpx + bottom) / dpi), dpi=dpi)
    W, H = left + wpx + right, top + hpx + bottom
    ax = fig.add_axes([left / W, bottom / H, wpx / W, hpx / H])
    ax.imshow(mosaic, interpolation="nearest", aspect="equal")
    centers = lambda n: [k * (tile + gap) + tile / 2 - 0.5 for k in range(n)]  # noqa: E731
    ax.set_yticks(centers(nr), ["image"] + list(methods), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xticks(centers(nc), [col_labels.get(m, m) for m in models], fontsize=6.5)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i, j in missing:
        ax.text(j * (tile + gap) + tile / 2, i * (tile + gap) + tile / 2, "n/a", ha="center", va="center",
                fontsize=8, color="0.45")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 8 / H, va="top")
    return _save(fig, path, dpi=dpi)


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
    averaged over images here) and optionally ``mode``, of which only the cascading
    rows are drawn; step 0 is the trained model.
    """
    df = curves if metric is None else curves[curves["metric"] == metric]
    if "mode" in df.columns:
        df = df[df["mode"].isna() | (df["mode"] == "cascading")]
    methods = sorted(df["method"].unique())
    models = sorted(df["model"].unique())
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}  # one colour per model
    ncol = min(4, max(1, len(methods)))
    nrow = int(np.ceil(len(methods) / ncol)) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.3 * nrow + 0.4), squeeze=False, sharey=True)
    means = df.groupby(["method", "model", "step"])["value"].mean()
    low = min(-0.2, float(means.min()) - 0.05) if len(means) else -0.2
    for k, meth in enumerate(methods):
        ax = axes[k // ncol, k % ncol]
        sub = means.loc[meth]
        for model in sub.index.get_level_values("model").unique():
            g = sub.loc[model]
            ax.plot(g.index, g.values, marker=".", color=colors[model], label=model)
        ax.set_title(meth, fontsize=8)
        ax.set_ylim(low, 1.05)
        ax.axhline(0, color="0.7", lw=0.6)
        steps = sorted(sub.index.get_level_values("step").unique())
        ax.set_xticks(steps, [str(int(v)) for v in steps])
        ax.set_xlabel("randomization step (0 = trained; top layers first)", fontsize=7)
        ax.tick_params(labelsize=7)
    for k in range(len(methods), nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    if methods:
        for r in range(nrow):
            axes[r, 0].set_ylabel("similarity to trained", fontsize=7)
        handles = [plt.Line2D([], [], color=colors[m], marker=".", label=m) for m in models]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(models), 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * nrow + 0.4)))
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


def before_after_figure(images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray],
                        row_labels: Sequence[str] | None = None, title: str = "", tile: float = 1.3):
    """Before/after class maps of a model and its remedied copies: one row per image, columns
    the image, then one per model (in ``maps`` order), every panel with the mask's outline.

    Parameters
    ----------
    images : (N, H, W, C) in [0, 1], C 1 or 3
    masks : bool (N, H, W) — the region outlined (e.g. the artefact)
    maps : column title -> (N, H, W) map (e.g. ``"before"``, then each remedy)
    row_labels : N labels of the rows (e.g. the true class)

    Returns
    -------
    matplotlib.figure.Figure with N x (1 + len(maps)) axes (row-major); close or save it.
    """
    from ..viz import to_rgb

    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, bool)
    n, cols = len(images), ["image"] + list(maps)
    if images.ndim != 4 or masks.shape != images.shape[:3] or n == 0:
        from ..errors import InputError

        raise InputError(f"images must be (N, H, W, C) with N > 0 and masks (N, H, W); got {images.shape} "
                         f"and {masks.shape}")
    for name, m in maps.items():
        if np.shape(m) != masks.shape:
            from ..errors import InputError

            raise InputError(f"map {name!r} has shape {np.shape(m)}; expected {masks.shape}")
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]
    fig, axes = plt.subplots(n, len(cols), figsize=(tile * len(cols), tile * n + (0.35 if title else 0.15)),
                             squeeze=False)
    for i in range(n):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            panel = rgb[i] if j == 0 else 0.45 * rgb[i] + 0.55 * to_rgb(np.asarray(maps[col][i], np.float32))
            ax.imshow(np.clip(panel, 0, 1), interpolation="nearest")
            if masks[i].any():
                ax.contour(masks[i].astype(np.float32), levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col, fontsize=7)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[i]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def before_after_grid(path: str | Path, images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray],
                      row_labels: Sequence[str] | None = None, title: str = "") -> Path:
    """:func:`before_after_figure` written as a PNG at ``path``; returns the path."""
    return _save(before_after_figure(images, masks, maps, row_labels, title), path)
