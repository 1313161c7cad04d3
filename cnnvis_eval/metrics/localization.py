"""Localization against ground truth: does the heatmap point at the object?

Inputs are heatmaps (N, H, W) (Explanations give their heatmaps) and ground-truth masks
(N, H, W), boolean (0/1 integers are accepted).  Every metric returns one value per image;
an image with an empty mask gets NaN (the metrics are undefined there; Zhang et al. leave
such images out).

The four single-object metrics score a *random* heatmap at chance, i.e. at about the
fraction of the image the mask covers (the pointing game with tolerance: the dilated mask's
fraction), so the random explainer of :mod:`cnnvis_eval.metrics.controls` is their negative
control.

The two class-contrast metrics (:class:`ClassContrastMass`, :class:`ContrastPointingGame`)
also take the other objects' pixels (``other_mask``) and ask whether the map tells the
explained object from the others (scenes of :mod:`cnnvis_eval.data.scenes`); a model-blind
map such as the Sobel edge control is at chance there, whatever it does on the one-object
metrics.

:class:`SuppressorMass` (lower is better) measures the share of relevance on a region
that carries no class information but that the model uses to cancel noise (the
suppressor variant of :mod:`cnnvis_eval.data.suppressor`).
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

    Ties are counted by their expected value, as :class:`PointingGame` does: when the
    K-th highest value is shared by t pixels (t_in of them in the mask) and only s of
    the K places are left for them, they contribute ``s * t_in / t`` — the mean over
    every way of breaking the tie.  A constant map therefore scores the mask's area
    fraction (chance), wherever the mask sits, instead of 1 or 0 by raster order.
    """

    name = "relevance_rank_accuracy"

    def evaluate_batch(self, heatmap, mask):
        flat = heatmap.reshape(len(heatmap), -1)
        m = mask.reshape(len(mask), -1)
        k = m.sum(1)
        kth = -np.sort(-flat, axis=1)[np.arange(len(flat)), np.maximum(k - 1, 0)][:, None]  # K-th highest
        above, tied = flat > kth, flat == kth
        left = k - above.sum(1)  # places of the top K the tied pixels share
        with np.errstate(invalid="ignore", divide="ignore"):
            inside = (above & m).sum(1) + left * (tied & m).sum(1) / tied.sum(1)
            acc = inside / np.where(k > 0, k, 1)
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


class ClassContrast(Localization):
    """Base of the class-contrast metrics: ``evaluate(heatmap (N, H, W), mask (N, H, W)
    bool, other_mask (N, H, W) bool) -> (N,)``.

    ``mask`` holds the pixels of the object of the explained class, ``other_mask`` those of
    the other objects in the image (e.g. :meth:`cnnvis_eval.data.SceneSet.contrast_masks`).
    Pixels in both count to the target only.  An image whose target or other mask is
    empty gets NaN.  A class-discriminative map (Grad-CAM in the study) scores high; a
    model-blind map (Sobel edges, noise) cannot tell the classes apart and scores at
    chance when the target is drawn at random among the objects.
    """

    per_image = ("heatmap", "mask", "other_mask")

    def check(self, data):
        data = super().check(data)
        other = check_masks(data["other_mask"], "other_mask", data["heatmap"].shape)
        data["other_mask"] = other & ~data["mask"]
        return data

    @staticmethod
    def _undefined(values, mask, other_mask):
        """NaN where the target or the other objects have no pixel."""
        return _empty_to_nan(_empty_to_nan(values, mask), other_mask)


@register_metric
class ClassContrastMass(ClassContrast):
    """Relevance mass on the target object minus mass on the other objects, per pixel of
    each region: with ``d_t`` and ``d_o`` the mean positive relevance over the target's
    and over the other objects' pixels, ``(d_t - d_o) / (d_t + d_o)`` in [-1, 1].

    1: all positive relevance on the target; -1: all on the other objects; 0 (chance):
    equal density on both, e.g. a constant map or, on average, i.i.d. noise.  Per-pixel
    densities keep the score from rewarding the larger object.  A map with no positive
    relevance on any object scores 0.
    """

    name = "class_contrast_mass"

    def evaluate_batch(self, heatmap, mask, other_mask):
        pos = np.maximum(heatmap, 0.0).reshape(len(heatmap), -1)
        t, o = mask.reshape(len(mask), -1), other_mask.reshape(len(mask), -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            d_t = (pos * t).sum(1) / t.sum(1)
            d_o = (pos * o).sum(1) / o.sum(1)
            total = d_t + d_o
            values = np.where(total > 0, (d_t - d_o) / np.where(total > 0, total, 1.0), 0.0)
        return self._undefined(values, mask, other_mask)


@register_metric
class ContrastPointingGame(ClassContrast):
    """Target-vs-other pointing game: among the pixels of all objects (target and others),
    a hit (1) when the map's maximum lies on the target, a miss (0) when it lies on
    another object.  Pixels off every object are ignored, so the question is only *which*
    object the map points at.

    Tied maxima count by their expected value (the share of them on the target), as in
    :class:`PointingGame`; chance for i.i.d. noise or a constant map is the target's share
    of the object pixels, ``|target| / (|target| + |others|)``.
    """

    name = "contrast_pointing_game"

    def evaluate_batch(self, heatmap, mask, other_mask):
        flat = heatmap.reshape(len(heatmap), -1)
        t, o = mask.reshape(len(mask), -1), other_mask.reshape(len(mask), -1)
        on = t | o
        peak = np.where(on, flat, -np.inf).max(1, keepdims=True)
        is_max = on & (flat == peak)
        with np.errstate(invalid="ignore", divide="ignore"):
            hits = (is_max & t).sum(1) / is_max.sum(1)
        return self._undefined(hits, mask, other_mask)


@register_metric
class SuppressorMass(Localization):
    """Share of the positive relevance on a suppressor region, ``sum(R+ in mask) / sum(R+)``;
    lower is better.

    ``evaluate(heatmap (N, H, W), suppressor_mask (N, H, W) bool) -> (N,)``.  A suppressor
    (XAI-TRIS, Clark et al. 2023; Haufe et al. 2014) carries no class information, yet a
    model uses it to cancel noise in the class signal
    (:func:`cnnvis_eval.data.suppressor.make_suppressor`): a map that shows where the class
    information is gives it little mass; the model's gradient and a model-blind edge map
    give it a lot.

    Parameters
    ----------
    absolute : bool
        False (default): positive relevance only, as :class:`RelevanceMassAccuracy`.  True:
        ``|R|``, so that the negative weight a linear model puts on a suppressor counts too.

    A map without any (positive) relevance scores 0; an empty mask gives NaN.
    """

    name = "suppressor_mass"
    higher_is_better = False
    per_image = ("heatmap", "suppressor_mask")

    def __init__(self, absolute: bool = False):
        super().__init__(absolute=bool(absolute))
        self.absolute = bool(absolute)

    def check(self, data):
        heat = check_maps(data["heatmap"], "heatmap")
        data["heatmap"] = heat
        data["suppressor_mask"] = check_masks(data["suppressor_mask"], "suppressor_mask", heat.shape)
        return data

    def evaluate_batch(self, heatmap, suppressor_mask):
        rel = (np.abs(heatmap) if self.absolute else np.maximum(heatmap, 0.0)).reshape(len(heatmap), -1)
        m = suppressor_mask.reshape(len(heatmap), -1)
        total = rel.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, (rel * m).sum(1) / np.where(total > 0, total, 1.0), 0.0)
        return _empty_to_nan(share, suppressor_mask)


__all__ = [
    "ClassContrast",
    "ClassContrastMass",
    "ContrastPointingGame",
    "EnergyPointingGame",
    "Localization",
    "PointingGame",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "SuppressorMass",
    "dilate",
]
