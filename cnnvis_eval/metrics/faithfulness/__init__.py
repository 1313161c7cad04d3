"""Faithfulness metrics: deletion, insertion and AOPC as registered :class:`Metric` classes.

The curves they reduce (and the module documentation: score, order, batching) are in
:mod:`cnnvis_eval.metrics.faithfulness.curves`; both are importable from here.  The gains
of :mod:`.normalized` (deletion, insertion and ROAD against random orders, per unit of the
clean score) compare across models.
"""

from __future__ import annotations


from ..base import Metric, check_target_is_class, register_metric
from .curves import (
    Curve,
    aopc,
    auc,
    deletion_curve,
    gaussian_blur,
    insertion_curve,
    pixel_ranks,
    region_curve,
    region_ranks,
    run_schedule,
    score_mode,
    uniform_noise,
)
from .road import noisy_linear_impute, road_curve


# ---------------------------------------------------------------------- metrics
class Faithfulness(Metric):
    """Base: ``evaluate(model, x (N, H, W, C), heatmap (N, H, W), target=None) -> (N,)``.

    ``batch_size`` of ``evaluate`` is the number of *images* per call; the number of
    *model inputs* per compiled call is the constructor's ``model_batch_size``.
    """

    category = "faithfulness"
    per_image = ("x", "heatmap")

    def __init__(self, score: str = "logit", absolute: bool = False, model_batch_size: int = 128, **params):
        super().__init__(score=score, absolute=absolute, model_batch_size=model_batch_size, **params)
        self.score = score_mode(score)
        self.absolute = bool(absolute)
        self.model_batch_size = int(model_batch_size)

    def check(self, data):
        if self.score == "probability":
            check_target_is_class(data["target"], f"score='probability' in {self.name!r}")
        return data


@register_metric
class DeletionAUC(Faithfulness):
    """Area under the deletion curve (:func:`deletion_curve`); lower is better."""

    name = "deletion_auc"
    higher_is_better = False

    def __init__(self, pixels_per_step: int | None = None, baseline=0.0, **kw):
        super().__init__(pixels_per_step=pixels_per_step, baseline=baseline, **kw)
        self.pixels_per_step, self.baseline = pixels_per_step, baseline

    def evaluate_batch(self, model, x, heatmap, target=None):
        return deletion_curve(model, x, heatmap, target, pixels_per_step=self.pixels_per_step,
                              baseline=self.baseline, score=self.score, absolute=self.absolute,
                              batch_size=self.model_batch_size).auc()


@register_metric
class InsertionAUC(Faithfulness):
    """Area under the insertion curve (:func:`insertion_curve`); higher is better."""

    name = "insertion_auc"
    higher_is_better = True

    def __init__(self, pixels_per_step: int | None = None, blur_kernel: int = 11, blur_sigma: float = 5.0, **kw):
        super().__init__(pixels_per_step=pixels_per_step, blur_kernel=blur_kernel, blur_sigma=blur_sigma, **kw)
        self.pixels_per_step, self.blur_kernel, self.blur_sigma = pixels_per_step, blur_kernel, blur_sigma

    def evaluate_batch(self, model, x, heatmap, target=None):
        return insertion_curve(model, x, heatmap, target, pixels_per_step=self.pixels_per_step,
                               blur_kernel=self.blur_kernel, blur_sigma=self.blur_sigma,
                               score=self.score, absolute=self.absolute,
                               batch_size=self.model_batch_size).auc()


class _AOPC(Faithfulness):
    order = "morf"

    def __init__(self, patch_size: int | None = None, steps: int | None = None, perturbation="uniform",
                 seed: int = 0, **kw):
        super().__init__(patch_size=patch_size, steps=steps,
                         perturbation=perturbation if isinstance(perturbation, str) else "array",
                         seed=seed, **kw)
        self.patch_size, self.steps, self.perturbation, self.seed = patch_size, steps, perturbation, int(seed)

    def evaluate_batch(self, model, x, heatmap, target=None):
        return aopc(region_curve(model, x, heatmap, target, order=self.order, patch_size=self.patch_size,
                                 steps=self.steps, perturbation=self.perturbation, seed=self.seed,
                                 score=self.score, absolute=self.absolute, batch_size=self.model_batch_size))


@register_metric
class AOPCMoRF(_AOPC):
    """AOPC with the most relevant regions first (Samek et al. 2017); higher is better."""

    name = "aopc_morf"
    higher_is_better = True
    order = "morf"


@register_metric
class AOPCLeRF(_AOPC):
    """AOPC with the least relevant regions first; lower (a flat curve) is better."""

    name = "aopc_lerf"
    higher_is_better = False
    order = "lerf"


# the gains subclass Faithfulness: imported once it is defined
from .normalized import DeletionGain, InsertionGain, RoadLeRFGain, RoadMoRFGain, random_maps  # noqa: E402

__all__ = [
    "AOPCLeRF",
    "AOPCMoRF",
    "Curve",
    "DeletionAUC",
    "DeletionGain",
    "Faithfulness",
    "InsertionAUC",
    "InsertionGain",
    "RoadLeRFGain",
    "RoadMoRFGain",
    "aopc",
    "auc",
    "deletion_curve",
    "gaussian_blur",
    "insertion_curve",
    "noisy_linear_impute",
    "pixel_ranks",
    "random_maps",
    "region_curve",
    "region_ranks",
    "road_curve",
    "run_schedule",
    "uniform_noise",
]
