"""ROAD: remove pixels and impute them from their neighbours (Rong et al. 2022).

"A Consistent and Efficient Evaluation Strategy for Attribution Methods" (ICML 2022) shows
that replacing removed pixels by a constant makes the perturbed images off-distribution,
so the model's reaction to the *replacement* can decide a deletion metric.  ROAD's noisy
linear imputation fills each removed pixel with the weighted mean of its 8 neighbours
(weights 1/6 for the 4 direct, 1/12 for the 4 diagonal neighbours; removed neighbours are
unknowns of the same sparse linear system) plus a little Gaussian noise, so the removal
leaves no shape the model could read.

:func:`noisy_linear_impute` is the imputation; :func:`road_curve` the MoRF (or LeRF) curve at a few
removal fractions, scored through :func:`~cnnvis_eval.metrics.faithfulness.curves.run_schedule`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from ...errors import InputError
from ..base import image_rng
from .curves import Curve, _resolve_indices, _setup, pixel_ranks, run_schedule

_NEIGHBOURS = [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]


def noisy_linear_impute(image: np.ndarray, removed: np.ndarray, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Impute the removed pixels of one image from their neighbours.

    Parameters
    ----------
    image : array (H, W, C)
    removed : bool array (H, W)
        The pixels to replace; at least one pixel must stay.
    noise : float
        Standard deviation of the added Gaussian noise, as a fraction of the image's value
        range (max - min); 0 gives the plain linear imputation.
    seed : int
        Seeds the noise (per (seed, image), see :func:`cnnvis_eval.metrics.base.image_rng`).

    Returns
    -------
    ndarray like ``image``: kept pixels unchanged, removed ones imputed.
    """
    img = np.asarray(image, np.float64)
    removed = np.asarray(removed, bool)
    h, w, c = img.shape
    out = img.copy()
    n_u = int(removed.sum())
    if n_u == 0:
        return out.astype(image.dtype)
    if n_u == h * w:
        raise InputError("noisy linear imputation needs at least one kept pixel")
    index = np.full((h, w), -1, np.int64)
    index[removed] = np.arange(n_u)
    py, px = np.nonzero(removed)
    rows, cols, vals = [], [], []
    diag = np.zeros(n_u)
    rhs = np.zeros((n_u, c))
    for dy, dx, wt in _NEIGHBOURS:
        qy, qx = py + dy, px + dx
        ok = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        p = index[py[ok], px[ok]]
        diag[p] += wt
        q = index[qy[ok], qx[ok]]
        unknown = q >= 0
        rows.append(p[unknown]), cols.append(q[unknown]), vals.append(np.full(unknown.sum(), -wt))
        np.add.at(rhs, p[~unknown], wt * img[qy[ok][~unknown], qx[ok][~unknown]])
    rows.append(np.arange(n_u)), cols.append(np.arange(n_u)), vals.append(diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_u, n_u)).tocsc()
    sol = np.asarray(spsolve(a, rhs)).reshape(n_u, c)
    if noise:
        sol = sol + image_rng(seed, image).normal(0.0, noise * float(img.max() - img.min()), size=sol.shape)
    out[removed] = sol
    return out.astype(image.dtype)


def _impute_all(x: np.ndarray, rank: np.ndarray, ks: list, noise: float, seed: int, workers: int | None) -> list:
    """``[imputed images (N, H, W, C) for k in ks]``: the (image, k) imputations spread over
    ``workers`` threads (SuperLU releases the GIL while it factorizes; each imputation is
    a pure function of its image, mask and seed, so the result does not depend on them)."""
    jobs = [(i, k) for k in ks for i in range(len(x))]
    workers = min(len(jobs), os.cpu_count() or 1) if workers is None else max(1, int(workers))

    def one(job):
        i, k = job
        return noisy_linear_impute(x[i], rank[i] < k, noise, seed)

    if workers == 1:
        done = [one(j) for j in jobs]
    else:
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(one, jobs))
    n = len(x)
    return [np.stack(done[j * n:(j + 1) * n]) for j in range(len(ks))]


def road_curve(model, x, heatmap, target=None, *, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), noise: float = 0.01,
               seed: int = 0, score: str = "logit", absolute: bool = False, batch_size: int = 128,
               workers: int | None = None, order: str = "morf") -> Curve:
    """ROAD curve: the target's score after removing the most relevant ``fraction`` of the
    pixels (``order="morf"``; the least relevant with ``"lerf"``) and imputing them
    (:func:`noisy_linear_impute`), for each fraction.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
    heatmap : array (N, H, W) or Explanation
    fractions : sequence of floats in (0, 1)
    noise, seed : see :func:`noisy_linear_impute`
    score, absolute, batch_size : as :func:`~cnnvis_eval.metrics.faithfulness.deletion_curve`
    workers : int, optional
        Threads for the imputations (default: the CPU count); the curve does not depend on it.
    order : "morf" (default) or "lerf"
        Most or least relevant pixels first (Rong et al. report both; ties in raster order).

    Returns
    -------
    Curve with ``fractions`` (K + 1,) = 0 then the given ones; ``scores`` (N, K + 1).
    """
    if order not in ("morf", "lerf"):
        raise InputError(f"order must be 'morf' (most relevant first) or 'lerf', got {order!r}")
    spec, x, heat, bound = _setup(model, x, heatmap, target)
    if order == "lerf":
        heat = -(np.abs(heat) if absolute else heat)
        absolute = False
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or len(fr) == 0 or np.any(fr <= 0) or np.any(fr >= 1):
        raise InputError(f"fractions must be values in (0, 1), got {fractions!r}")
    idx = _resolve_indices(spec, x, bound, batch_size)
    pixels = heat.shape[1] * heat.shape[2]
    rank = pixel_ranks(heat, absolute)
    cols = [run_schedule(spec, x, x, rank, np.array([0], np.int32), bound, idx, score, batch_size)]
    ks = [round(f * pixels) for f in fr]
    for k, imputed in zip(ks, _impute_all(x, rank, ks, noise, seed, workers)):
        cols.append(run_schedule(spec, imputed, x, rank, np.array([k], np.int32), bound, idx, score, batch_size))
    return Curve(np.concatenate([[0.0], fr]), np.concatenate(cols, axis=1), idx)


__all__ = ["noisy_linear_impute", "road_curve"]
