"""Control explainers: baselines that prove a metric can fail (DESIGN rule 6).

These are :class:`~cnnvis_eval.methods.base.Explainer` subclasses that are deliberately
*not* registered as methods (``list_methods()`` does not show them); build them directly::

    ConstantExplainer(spec).explain(x)       # the same map for every image
    EdgeExplainer(spec).explain(x)           # Sobel edges of the input; ignores the model
    RandomExplainer(spec, seed=0).explain(x) # seeded noise

None of them looks at the model's weights (they run one forward pass only to report the
target's index and score), so model-parameter randomization cannot change their maps:
a randomization metric must flag the constant and edge explainers as failures.  The
random explainer scores at chance on localization and faithfulness metrics.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..methods.base import BatchResult, Explainer
from .base import image_rng


class _Control(Explainer):
    reads_weights_once = False  # model-blind maps; the scores come from the compiled forward pass

    def _scores(self, x, bound):
        """Target scores and indices (one forward pass); the maps never use them."""
        return self.forward(x, bound)


class ConstantExplainer(_Control):
    """The constant map ``value`` for every image and target (an uninformative baseline).

    Parameters
    ----------
    value : float
    """

    name = "constant"

    def __init__(self, model, *, value: float = 1.0):
        super().__init__(model, value=value)
        self.value = float(value)

    def _explain_batch(self, x, bound):
        s, i = self._scores(x, bound)
        heat = np.full(x.shape[:3], self.value, np.float32)
        return BatchResult(heat, None, i, s)


class EdgeExplainer(_Control):
    """An input-only "explanation": the Sobel gradient magnitude of the input image,
    ``sqrt(sum_c (Sx * x_c)^2 + (Sy * x_c)^2)`` (borders replicated).

    It looks like a plausible saliency map on natural images while ignoring the model,
    which is exactly what the randomization test of Adebayo et al. must catch.
    """

    name = "edge_sobel"

    def _explain_batch(self, x, bound):
        s, i = self._scores(x, bound)
        x64 = x.astype(np.float64)
        # Sobel along H and W only (scipy's ndimage.sobel would also smooth over the batch
        # and channel axes): derivative [-1, 0, 1] on one axis, smoothing [1, 2, 1] on the other
        d, s = [-1.0, 0.0, 1.0], [1.0, 2.0, 1.0]
        c1 = lambda a, w, ax: ndimage.correlate1d(a, w, axis=ax, mode="nearest")  # noqa: E731
        gx = c1(c1(x64, d, 2), s, 1)
        gy = c1(c1(x64, d, 1), s, 2)
        heat = np.sqrt((gx * gx + gy * gy).sum(-1)).astype(np.float32)
        return BatchResult(heat, None, i, s)


class RandomExplainer(_Control):
    """Seeded random heatmaps: i.i.d. noise per pixel.

    Parameters
    ----------
    seed : int
        The map of an image depends only on (seed, image bytes): identical seeds give
        identical maps, whatever the batch split, and different images get independent
        maps.  The model is not consulted.
    distribution : "uniform" (in [0, 1), default) or "normal" (signed)
    """

    name = "random"
    stochastic = True

    def __init__(self, model, *, seed: int = 0, distribution: str = "uniform"):
        if distribution not in ("uniform", "normal"):
            raise InputError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")
        super().__init__(model, seed=seed, distribution=distribution)
        self.seed = int(seed)
        self.distribution = distribution
        self.signed = distribution == "normal"

    def _explain_batch(self, x, bound):
        s, i = self._scores(x, bound)
        heat = np.empty(x.shape[:3], np.float32)
        for k in range(len(x)):  # one generator per image (batch-split invariant)
            rng = image_rng(self.seed, x[k])
            heat[k] = rng.random(x.shape[1:3]) if self.distribution == "uniform" else rng.standard_normal(x.shape[1:3])
        return BatchResult(heat, None, i, s)


CONTROLS = {c.name: c for c in (ConstantExplainer, EdgeExplainer, RandomExplainer)}
"""The control explainers by name (not part of the method registry)."""

__all__ = ["CONTROLS", "ConstantExplainer", "EdgeExplainer", "RandomExplainer"]
