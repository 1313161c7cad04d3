"""Complexity of a heatmap: how concentrated is the evidence?

Both metrics work on the absolute values of the heatmap ``|h|`` (N, H, W) and return one
value per image.
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


__all__ = ["Complexity", "Entropy", "Sparseness"]
