"""Complexity of a heatmap: how concentrated is the evidence?

Sparseness and entropy work on the absolute values of the heatmap ``|h|`` (N, H, W);
compactness on its positive part, as a region.  Each returns one value per image.
"""

from __future__ import annotations

import numpy as np

from .base import Metric, check_maps, register_metric


class Complexity(Metric):
    """Base: ``evaluate(heatmap (N, H, W)) -> (N,)``."""

    category = "complexity"
    per_image = ("heatmap",)

    def check(self, data):
        data["heatmap"] = check_maps(data["heatmap"], "heatmap")
        return data


@register_metric
class Sparseness(Complexity):
    """Sparseness as the Gini index of ``|h|`` (Chalasani et al. 2020).

    With the values sorted ascending ``a_1 <= ... <= a_n``::

        G = sum_k (2k - n - 1) a_k / (n sum_k a_k)

    0 for a uniform map, ``1 - 1/n`` for a map with a single non-zero pixel.  An all-zero
    map scores 0 (no concentration).
    """

    name = "sparseness"
    higher_is_better = True

    def evaluate_batch(self, heatmap):
        a = np.sort(np.abs(heatmap).reshape(len(heatmap), -1), axis=1)
        n = a.shape[1]
        k = np.arange(1, n + 1, dtype=np.float64)
        total = a.sum(1)
        num = ((2 * k - n - 1)[None, :] * a).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, num / (n * np.where(total > 0, total, 1.0)), 0.0)


@register_metric
class Entropy(Complexity):
    """Shannon entropy (nats) of ``p = |h| / sum |h|`` (Bhatt et al. 2020's complexity).

    ``log(H*W)`` for a uniform map, 0 for a single pixel; lower is simpler.  An all-zero
    map has no distribution: NaN.
    """

    name = "entropy"
    higher_is_better = False

    def evaluate_batch(self, heatmap):
        a = np.abs(heatmap).reshape(len(heatmap), -1)
        total = a.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = a / total
            terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        return np.where(total[:, 0] > 0, terms.sum(1), np.nan)


@register_metric
class Compactness(Complexity):
    """Does the map single out one compact region?  The share of its top pixels that form
    one connected blob.

    The top pixels are the ``top`` fraction of the image with the largest positive values
    (the evidence *for* the target; negative values are not counted).  The score is the
    share of their positive mass inside the largest 8-connected component they form
    (``scipy.ndimage.label``): 1 when they are one blob, about ``1 / count`` when they are
    scattered as single pixels (a noisy gradient or a random map scores near 0).  This is
    the objective form of what the study asked of an intermediate neuron's map ("the map
    concentrates on a compact region"); the study's table counts a cell a hit at
    ``>= 0.5`` (:mod:`cnnvis_eval.report.study`).

    Ties at the threshold are all kept; a map whose positive values tie over more than
    twice the ``top`` fraction (a constant map) singles out nothing and scores 0, as does a
    map with no positive value.

    Parameters
    ----------
    top : float in (0, 0.5]
        Fraction of the pixels that counts as the map's top (default 0.05).
    """

    name = "compactness"
    higher_is_better = True

    def __init__(self, top: float = 0.05):
        from ..errors import InputError

        if not (isinstance(top, (int, float)) and not isinstance(top, bool) and 0 < top <= 0.5):
            raise InputError(f"top must be a fraction in (0, 0.5], got {top!r}")
        super().__init__(top=float(top))
        self.top = float(top)

    def evaluate_batch(self, heatmap):
        from scipy import ndimage

        n, h, w = heatmap.shape
        k = max(1, int(round(self.top * h * w)))
        out = np.zeros(n, np.float64)
        eight = np.ones((3, 3), bool)
        for i, m in enumerate(np.asarray(heatmap, np.float64)):
            flat = m.ravel()
            kth = np.partition(flat, flat.size - k)[flat.size - k]
            chosen = (m >= kth) & (m > 0)
            if not chosen.any() or chosen.sum() > 2 * k:
                continue
            labels, count = ndimage.label(chosen, structure=eight)
            mass = ndimage.sum_labels(m, labels, index=np.arange(1, count + 1))
            out[i] = mass.max() / mass.sum()
        return out


__all__ = ["Compactness", "Complexity", "Entropy", "Sparseness"]
