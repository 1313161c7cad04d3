"""Metrics: similarity, randomization, faithfulness, localization, complexity, axioms.

Every metric is a registered :class:`Metric` with ``name``, ``higher_is_better`` and
``category``; ``metric.evaluate(...)`` returns one value per image, ndarray (N,)::

    from cnnvis_eval.metrics import get_metric, list_metrics
    get_metric("pointing_game")(tolerance=5).evaluate(heatmaps, masks)   # (N,)

Importing this package registers all metrics.  The control explainers (constant, edge
detector, random) live in :mod:`cnnvis_eval.metrics.controls`.
"""

from . import axioms, complexity, faithfulness, localization, parts, randomization, similarity  # noqa: F401
from .base import (
    CATEGORIES,
    METRICS,
    Metric,
    explainer_factory,
    get_metric,
    list_metrics,
    long_frame,
    make_metric,
    register_metric,
)
from .controls import CONTROLS, ConstantExplainer, EdgeExplainer, RandomExplainer
from .faithfulness import deletion_curve, insertion_curve, region_curve
from .randomization import (
    clone_with_weights,
    compare_models,
    layer_groups,
    randomization_curve,
    randomization_explanations,
    randomized_models,
    train_on_permuted_labels,
)
from .axioms import input_shift_explanations, shift_model
from .similarity import agreement_matrix, pairwise_similarity
from .parts import part_importance


def evaluate(metric: str, *args, batch_size: int | None = None, params: dict | None = None, **kwargs):
    """Shortcut: ``get_metric(metric)(**params).evaluate(*args, batch_size=..., **kwargs)`` -> (N,)."""
    return make_metric(metric, **(params or {})).evaluate(*args, batch_size=batch_size, **kwargs)


__all__ = [
    "CATEGORIES",
    "METRICS",
    "CONTROLS",
    "ConstantExplainer",
    "EdgeExplainer",
    "Metric",
    "RandomExplainer",
    "agreement_matrix",
    "clone_with_weights",
    "compare_models",
    "deletion_curve",
    "evaluate",
    "explainer_factory",
    "get_metric",
    "input_shift_explanations",
    "insertion_curve",
    "layer_groups",
    "list_metrics",
    "long_frame",
    "make_metric",
    "pairwise_similarity",
    "part_importance",
    "randomization_curve",
    "randomization_explanations",
    "randomized_models",
    "region_curve",
    "register_metric",
    "shift_model",
    "train_on_permuted_labels",
]
