"""Faithfulness gains: perturbation curves scored against random pixel orders, per unit of the
clean score, so that tables compare across models.

A raw deletion or insertion AUC is in the model's logit units and mixes the map's quality with
how the model reacts to the replacement values (a model with 10x larger logits gets 10x the
AUC; a model that dislikes zeros drops fast under *any* order).  The gains here subtract the
same curve for random pixel orders and divide by the clean score, per image::

    gain = sign * (AUC(the map's order) - mean_r AUC(random order r)) / |f(x)|

with ``sign = -1`` where a lower curve is better (deletion, ROAD MoRF) and ``+1`` where a
higher one is (insertion, ROAD LeRF), and ``f(x)`` the explained score of the unperturbed
image (the curve's own clean point).  0 means "no better than a random order", positive
better, negative worse; scaling the model's logits leaves the gain unchanged.  An image
whose clean score is within ``min_scale`` of 0 gets NaN (the gain is undefined there).

The random orders are the maps of :class:`cnnvis_eval.metrics.controls.RandomExplainer`
with seeds ``seed + 1 .. seed + random_orders`` (uniform noise drawn per (seed, image), so
they do not depend on the batch split; ``seed`` itself seeds ROAD's imputation noise).
Each evaluation costs ``1 + random_orders`` curves; a metric object keeps the random orders'
AUCs it computed, keyed by the model's weights, the inputs and the target, so scoring many
methods' maps of the same images with one object (as a run does) computes them once.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..base import image_rng, register_metric
from . import Faithfulness
from .curves import Curve, deletion_curve, insertion_curve
from .road import road_curve


RANDOM_ORDERS = 3  # random pixel orders a gain is measured against (the default)


def random_maps(x: np.ndarray, seed: int) -> np.ndarray:
    """The uniform random maps (N, H, W) of ``RandomExplainer(seed=seed)`` for images x (N, H, W, C)."""
    return np.stack([image_rng(seed, xi).random(xi.shape[:2]) for xi in x])


class _Gain(Faithfulness):
    """Base: ``evaluate(model, x (N, H, W, C), heatmap (N, H, W), target=None) -> (N,)``."""

    higher_is_better = True
    sign = -1.0  # -1: a lower curve is better (removal of the most relevant first)
    clean_point = 0  # the curve's point at the unperturbed image

    def __init__(self, random_orders: int = RANDOM_ORDERS, seed: int = 0, min_scale: float = 1e-6, **kw):
        if isinstance(random_orders, bool) or not isinstance(random_orders, (int, np.integer)) or random_orders < 1:
            raise InputError(f"random_orders must be an integer >= 1, got {random_orders!r}")
        if not (np.isfinite(min_scale) and min_scale >= 0):
            raise InputError(f"min_scale must be >= 0, got {min_scale!r}")
        super().__init__(random_orders=int(random_orders), seed=int(seed), min_scale=float(min_scale), **kw)
        self.random_orders, self.seed, self.min_scale = int(random_orders), int(seed), float(min_scale)
        self._random_auc: dict = {}  # (model, inputs, target) -> mean AUC of the random orders

    def curve(self, model, x, heatmap, target) -> Curve:
        raise NotImplementedError

    def evaluate_batch(self, model, x, heatmap, target=None):
        own = self.curve(model, x, heatmap, target)
        x = np.asarray(x, np.float64 if model.graph.input_dtype == "float64" else np.float32)
        key = self._key(model, x, target)
        rand = self._random_auc.get(key) if key is not None else None
        if rand is None:
            rand = np.mean([self.curve(model, x, random_maps(x, self.seed + 1 + r), target).auc()
                            for r in range(self.random_orders)], axis=0)
            if key is not None:
                self._random_auc[key] = rand
        clean = own.scores[:, self.clean_point]
        scale = np.abs(clean)
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = self.sign * (own.auc() - rand) / np.where(scale > self.min_scale, scale, 1.0)
        return np.where(scale > self.min_scale, gain, np.nan)


    @staticmethod
    def _key(model, x, target) -> tuple:
        """What the random orders' curves depend on besides the metric's parameters: the
        model (its weights: a model randomized in place gets a new key), the inputs and
        the target."""
        import hashlib
        import pickle

        h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        try:
            h.update(pickle.dumps(target))
        except Exception:  # a target that cannot be pickled is not cached
            return None
        weights = hashlib.sha256()
        for w in model.model.weights:
            weights.update(np.ascontiguousarray(w.numpy()).tobytes())
        return id(model.model), weights.hexdigest(), h.hexdigest()


@register_metric
class DeletionGain(_Gain):
    """Deletion (:func:`deletion_curve`, zero fill) against random orders, per |f(x)|; higher is better."""

    name = "deletion_gain"

    def __init__(self, pixels_per_step: int | None = None, baseline=0.0, **kw):
        super().__init__(pixels_per_step=pixels_per_step, baseline=baseline, **kw)
        self.pixels_per_step, self.baseline = pixels_per_step, baseline

    def curve(self, model, x, heatmap, target):
        return deletion_curve(model, x, heatmap, target, pixels_per_step=self.pixels_per_step, baseline=self.baseline,
                              score=self.score, absolute=self.absolute, batch_size=self.model_batch_size)


@register_metric
class InsertionGain(_Gain):
    """Insertion (:func:`insertion_curve`, from the blurred image) against random orders, per
    |f(x)|; higher is better."""

    name = "insertion_gain"
    sign = 1.0
    clean_point = -1

    def __init__(self, pixels_per_step: int | None = None, blur_kernel: int = 11, blur_sigma: float = 5.0, **kw):
        super().__init__(pixels_per_step=pixels_per_step, blur_kernel=blur_kernel, blur_sigma=blur_sigma, **kw)
        self.pixels_per_step, self.blur_kernel, self.blur_sigma = pixels_per_step, blur_kernel, blur_sigma

    def curve(self, model, x, heatmap, target):
        return insertion_curve(model, x, heatmap, target, pixels_per_step=self.pixels_per_step,
                               blur_kernel=self.blur_kernel, blur_sigma=self.blur_sigma, score=self.score,
                               absolute=self.absolute, batch_size=self.model_batch_size)


class _RoadGain(_Gain):
    order = "morf"

    def __init__(self, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), noise: float = 0.01, **kw):
        super().__init__(fractions=tuple(fractions), noise=noise, **kw)
        self.fractions, self.noise = tuple(fractions), noise

    def curve(self, model, x, heatmap, target):
        return road_curve(model, x, heatmap, target, fractions=self.fractions, noise=self.noise, seed=self.seed,
                          score=self.score, absolute=self.absolute, batch_size=self.model_batch_size,
                          order=self.order)


@register_metric
class RoadMoRFGain(_RoadGain):
    """ROAD (Rong et al. 2022: noisy linear imputation, :func:`road_curve`), most relevant
    pixels removed first, against random orders, per |f(x)|; higher is better."""

    name = "road_morf_gain"


@register_metric
class RoadLeRFGain(_RoadGain):
    """ROAD with the least relevant pixels removed first (the score should stay high) against
    random orders, per |f(x)|; higher is better."""

    name = "road_lerf_gain"
    sign = 1.0
    order = "lerf"


__all__ = ["RANDOM_ORDERS", "DeletionGain", "InsertionGain", "RoadLeRFGain", "RoadMoRFGain", "random_maps"]
