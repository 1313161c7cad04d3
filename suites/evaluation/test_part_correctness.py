"""Part correctness on benchmark v2's part-based birds (issue 16): the metric can fail, and
methods separate on it.

Each clean mini model was trained on the birds (four classes, each a combination of four
two-way parts that differ by shape only; :mod:`cnnvis_eval.data.parts`).  The ground truth
of an image is the drop of the explained logit when each part is removed (painted with the
background under it), measured on the model itself (FunnyBirds' single-deletion protocol,
Hesse et al. 2023; :func:`cnnvis_eval.metrics.part_importance`), and a map is scored by the
Spearman correlation between its mean relevance per part and those drops
(``part_importance_correlation``).

The model-blind controls (Sobel edges, uniform noise) must sit at chance (0): the parts'
colours and textures are drawn independently of the class, so edges say nothing about which
part the model needs.  At least one method must beat both controls by a clear margin.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.data import make_parts
from cnnvis_eval.data.benchmark import BIRD_OFFSET
from suites.support.models import MINI, mini_spec

BIRDS, SEED = 48, 21
CHANCE_TOLERANCE = 0.2  # |mean| of a control over 48 birds (s.e. of one bird's Spearman over 4 parts ~0.6)
MARGIN = 0.3  # the best method's lead over both controls
METHODS = ("saliency", "gradient_x_input", "integrated_gradients", "grad_cam", "lrp_epsilon", "guided_backprop", "occlusion",
           "lime")


@functools.cache
def birds_of(model: str):
    spec = mini_spec(model)
    birds = make_parts(BIRDS, 64, seed=SEED)
    x = spec.preprocess(birds.images)
    target = cv.ClassTarget(BIRD_OFFSET + birds.labels)
    removed = np.stack([spec.preprocess(r) for r in birds.counterfactuals()])
    importance = M.part_importance(spec, x, removed, target)
    return spec, birds, x, target, importance


def correctness(model: str, h: np.ndarray) -> float:
    _, birds, _, _, importance = birds_of(model)
    return float(np.nanmean(M.evaluate("part_importance_correlation", h, birds.part_masks, importance)))


@pytest.mark.parametrize("model", MINI)
def test_controls_at_chance_and_a_method_clearly_above(model, record):
    spec, birds, x, target, importance = birds_of(model)
    assert (importance.max(1) > 0).mean() > 0.9, "the model must rely on some part of most birds"
    controls = {"edge_sobel": M.EdgeExplainer(spec).explain(x, target=target).heatmap,
                "random": M.RandomExplainer(spec, seed=0).explain(x, target=target).heatmap}
    scores = {name: correctness(model, h) for name, h in controls.items()}
    for method in METHODS:
        scores[method] = correctness(model, cv.explain(method, spec, x, target=target, progress=False).heatmap)
    for name, value in scores.items():
        record("part_importance_correlation", [value], method=name, model=model)
    for name in controls:
        assert abs(scores[name]) < CHANCE_TOLERANCE, scores
    best = max(scores[m] for m in METHODS)
    assert best >= max(scores[c] for c in controls) + MARGIN, scores
