"""Part-importance correctness: does the map's mass per part rank the parts as the model does?

Ground truth comes from counterfactuals on the model itself (FunnyBirds' single-deletion
protocol, Hesse et al., ICCV 2023): the importance of part p in image i is the drop of the
explained logit when the part is removed (painted with the background,
:meth:`cnnvis_eval.data.PartSet.remove`), ``f(x_i) - f(x_i without p)``
(:func:`part_importance`).  :class:`PartImportanceCorrelation` scores a heatmap by the
Spearman rank correlation, per image, between its mass per part and these importances.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ..errors import InputError
from ..methods.base import check_input
from ..models.spec import as_spec
from ..targets import bind
from .base import Metric, check_maps, register_metric
from .faithfulness.curves import _resolve_indices, run_schedule, score_mode


def part_importance(model, x, removed, target=None, *, score: str = "logit", batch_size: int = 128) -> np.ndarray:
    """Counterfactual importance of each part: the target's score drop when the part is removed.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
        Preprocessed model inputs.
    removed : array (N, P, H, W, C)
        ``removed[:, p]``: the same inputs with part p removed (e.g. the preprocessed
        :meth:`cnnvis_eval.data.PartSet.counterfactuals`).
    target : ClassTarget, NeuronTarget, int or None
        Default: the top class of each unperturbed image (resolved once on ``x``).
    score : "logit" (default) or "probability"
    batch_size : int
        Model inputs per compiled call.

    Returns
    -------
    ndarray float64 (N, P): ``f(x) - f(removed[:, p])`` (positive: the part raised the score).
    """
    spec = as_spec(model)
    graph = spec.graph
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    x = check_input(x, graph, dtype)
    removed = np.asarray(removed)
    if removed.ndim != 5 or removed.shape[:1] + removed.shape[2:] != x.shape:
        raise InputError(f"removed must have shape (N, P, H, W, C) = ({len(x)}, P, {', '.join(map(str, x.shape[1:]))});"
                         f" got {removed.shape}")
    bound = bind(target, graph, len(x))
    mode = score_mode(score)
    idx = _resolve_indices(spec, x, bound, batch_size)
    everywhere = np.zeros(x.shape[:3], np.int32)  # rank 0 < threshold 1: every pixel from `removed`
    clean = run_schedule(spec, x, x, everywhere, np.array([1], np.int32), bound, idx, mode, batch_size)[:, 0]
    out = np.empty(removed.shape[:2], np.float64)
    for p in range(removed.shape[1]):
        cf = check_input(removed[:, p], graph, dtype)
        out[:, p] = clean - run_schedule(spec, cf, x, everywhere, np.array([1], np.int32), bound, idx, mode,
                                         batch_size)[:, 0]
    return out


def _rank_rows(values: np.ndarray) -> np.ndarray:
    """Average ranks per row (ties share their mean rank), centred."""
    r = rankdata(values, method="average", axis=1)
    return r - r.mean(1, keepdims=True)


@register_metric
class PartImportanceCorrelation(Metric):
    """Spearman rank correlation between a map's mass per part and the parts' counterfactual
    importance (FunnyBirds' single-deletion score, Hesse et al. 2023), per image, in [-1, 1].

    ``evaluate(heatmap (N, H, W), part_masks (N, P, H, W) bool, importance (N, P)) -> (N,)``
    with P >= 2 parts and ``importance`` from :func:`part_importance` (or any per-part
    ground truth).

    Parameters
    ----------
    mass : "mean" (default) or "sum"
        A part's mass: the mean of the (signed) map over its pixels, or the sum, as
        FunnyBirds does.  With "sum", a map that is uniform over the object ranks the parts
        by area, so its score is the correlation between area and importance: measured on a
        trained 48 px CNN of the parts data, the uniform random map scored -0.42 with "sum"
        (it ranked the large body, which the model ignores, first) and -0.01 with "mean";
        Sobel -0.15 / +0.05.  "mean" (relevance per pixel) removes that area prior, as
        :class:`~cnnvis_eval.metrics.localization.ClassContrastMass` does, so the
        model-blind controls sit at chance (the default for that reason).  For a linear
        model, the map ``w * (x - background)`` sums over each part to the part's
        importance exactly and scores 1 with "sum".

    Ties and undefined cases: tied values share their average rank (Spearman's usual rule).
    An image whose importances all tie (e.g. a model that ignores every part) has no ranking
    to recover and gets NaN (left out of means, as the localization metrics leave out images
    without a mask).  A map whose masses all tie (e.g. all zero) ranks nothing and scores 0,
    the chance level.  A part with an empty mask has mass 0 ("sum") or NaN ("mean", then the
    image gets NaN).  Model-blind maps (Sobel edges, noise) score about 0 on average when the
    importances do not follow the parts' areas or textures.
    """

    name = "part_importance_correlation"
    category = "localization"
    higher_is_better = True
    per_image = ("heatmap", "part_masks", "importance")

    def __init__(self, mass: str = "mean"):
        if mass not in ("sum", "mean"):
            raise InputError(f"mass must be 'sum' or 'mean', got {mass!r}")
        super().__init__(mass=mass)
        self.mass = mass

    def check(self, data):
        heat = check_maps(data["heatmap"], "heatmap")
        masks = np.asarray(data["part_masks"])
        n, h, w = heat.shape
        if masks.ndim != 4 or masks.shape[0] != n or masks.shape[2:] != (h, w):
            raise InputError(f"part_masks must have shape (N, P, H, W) = ({n}, P, {h}, {w}); got {masks.shape}")
        if masks.dtype != bool and not (masks.dtype.kind in "iuf" and np.isin(masks, (0, 1)).all()):
            raise InputError(f"part_masks must be boolean masks (or 0/1 values); got dtype {masks.dtype}")
        imp = np.asarray(data["importance"], np.float64)
        if imp.shape != masks.shape[:2]:
            raise InputError(f"importance must have shape (N, P) = {masks.shape[:2]}; got {imp.shape}")
        if masks.shape[1] < 2:
            raise InputError(f"part_importance_correlation needs at least 2 parts; got {masks.shape[1]}")
        data.update(heatmap=heat, part_masks=masks.astype(bool), importance=imp)
        return data

    def evaluate_batch(self, heatmap, part_masks, importance):
        mass = np.einsum("nhw,nphw->np", heatmap, part_masks.astype(np.float64))
        if self.mass == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                mass = mass / part_masks.sum((2, 3))
        undefined = np.isnan(mass).any(1)
        a = _rank_rows(np.nan_to_num(mass))
        b = _rank_rows(importance)
        na, nb = np.sqrt((a * a).sum(1)), np.sqrt((b * b).sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(na > 0, (a * b).sum(1) / (na * nb), 0.0)
        return np.where((nb == 0) | undefined, np.nan, rho)


__all__ = ["PartImportanceCorrelation", "part_importance"]
