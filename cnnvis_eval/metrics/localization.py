"""Localization against ground truth: does the heatmap point at the object?

Inputs are heatmaps (N, H, W) (Explanations give their heatmaps) and ground-truth masks
(N, H, W), boolean (0/1 integers are accepted).  Every metric returns one value per image;
an image with an empty mask gets NaN (the metrics are undefined there; Zhang et al. leave
such images out).

All four metrics score a *random* heatmap at chance, i.e. at about the fraction of the
image the mask covers (the pointing game with tolerance: the dilated mask's fraction), so
the random explainer of :mod:`cnnvis_eval.metrics.controls` is their negative control.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..errors import InputError
from .base import Metric, check_maps, check_masks, register_metric


class Localization(Metric):
    """Base: ``evaluate(heatmap (N, H, W), mask (N, H, W) bool) -> (N,)``."""

    category = "localization"
    higher_is_better = True
    per_image = ("heatmap", "mask")

    def check(self, data):
        heat = check_maps(data["heatmap"], "heatmap")
        data["heatmap"] = heat
        data["mask"] = check_masks(data["mask"], "mask", heat.shape)
        return data


def _empty_to_nan(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    empty = ~mask.reshape(len(mask), -1).any(1)
    return np.where(empty, np.nan, values)


def dilate(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Masks (N, H, W) grown by ``tolerance`` pixels (Euclidean distance <= tolerance)."""
    if tolerance <= 0:
        return mask.copy()
    out = np.zeros_like(mask)
    for i in range(len(mask)):  # one distance transform per image
        if mask[i].any():
            out[i] = distance_transform_edt(~mask[i]) <= tolerance
    return out


@register_metric
class PointingGame(Localization):
    """Pointing game (Zhang et al. 2016/2018): a hit when the heatmap's maximum lies
    within ``tolerance`` pixels of the ground-truth mask.

    Parameters
    ----------
    tolerance : float, optional
        In pixels.  Default: the paper's 15 px at 224 px, scaled to the heatmap size
        (``15 * max(H, W) / 224``, rounded).

    Returns 1 (hit) or 0 (miss) per image; when several pixels share the maximum value
    the score is the fraction of them that hit, so a constant heatmap scores the fraction
    of the image within tolerance of the mask (chance), not an arbitrary corner's luck.
    """

    name = "pointing_game"

    def __init__(self, tolerance: float | None = None):
        super().__init__(tolerance=tolerance)
        if tolerance is not None and (not np.isfinite(tolerance) or tolerance < 0):
            raise InputError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
        self.tolerance = tolerance

    def pixels(self, shape: tuple) -> float:
        """The tolerance in pixels for heatmaps of ``shape`` (…, H, W)."""
        if self.tolerance is not None:
            return float(self.tolerance)
        return float(round(15.0 * max(shape[-2:]) / 224.0))

    def evaluate_batch(self, heatmap, mask):
        hit_zone = dilate(mask, self.pixels(heatmap.shape))
        flat = heatmap.reshape(len(heatmap), -1)
        is_max = flat == flat.max(1, keepdims=True)
        hits = (is_max & hit_zone.reshape(len(heatmap), -1)).sum(1) / is_max.sum(1)
        return _empty_to_nan(hits, mask)


@register_metric
class RelevanceMassAccuracy(Localization):
    """Relevance mass accuracy (Arras et al. 2022): the share of the positive relevance
    that falls inside the mask, ``sum(R+ in mask) / sum(R+)``.

    Only positive relevance counts (negative values are set to 0).  A heatmap without any
    positive value scores 0.
    """

    name = "relevance_mass_accuracy"

    def evaluate_batch(self, heatmap, mask):
        pos = np.maximum(heatmap, 0.0).reshape(len(heatmap), -1)
        m = mask.reshape(len(mask), -1)
        total = pos.sum(1)
        inside = (pos * m).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
        return _empty_to_nan(acc, mask)


@register_metric
class RelevanceRankAccuracy(Localization):
    """Relevance rank accuracy (Arras et al. 2022): with K = mask size, the fraction of
    the K highest-relevance pixels that lie inside the mask.

    Ties at the K-th value are broken by raster order (stable sort).
    """

    name = "relevance_rank_accuracy"

    def evaluate_batch(self, heatmap, mask):
        flat = heatmap.reshape(len(heatmap), -1)
        m = mask.reshape(len(mask), -1)
        k = m.sum(1)
        order = np.argsort(-flat, axis=1, kind="stable")
        ranked_in = np.take_along_axis(m, order, axis=1)  # mask membership in rank order
        topk = np.arange(flat.shape[1])[None, :] < k[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = (ranked_in & topk).sum(1) / np.where(k > 0, k, 1)
        return _empty_to_nan(acc, mask)


@register_metric
class EnergyPointingGame(Localization):
    """Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the
    saliency map's energy inside the mask (their bounding box), with the map min-max
    normalized to [0, 1] first, as CAM-style maps are.

    Unlike :class:`RelevanceMassAccuracy` (positive part of the raw values), the map is
    shifted by its minimum, so an offset heatmap is judged by its shape.  A constant map
    counts as uniform energy (score = mask area fraction).
    """

    name = "energy_pointing_game"

    def evaluate_batch(self, heatmap, mask):
        flat = heatmap.reshape(len(heatmap), -1)
        lo = flat.min(1, keepdims=True)
        span = flat.max(1, keepdims=True) - lo
        energy = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 1.0)
        m = mask.reshape(len(mask), -1)
        acc = (energy * m).sum(1) / energy.sum(1)
        return _empty_to_nan(acc, mask)


__all__ = [
    "EnergyPointingGame",
    "Localization",
    "PointingGame",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "dilate",
]
