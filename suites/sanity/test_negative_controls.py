"""Negative controls: prove the metrics can fail (DESIGN rule 6).

A constant explainer and an input-only edge detector ignore the model, so model-parameter
randomization must leave their maps unchanged (similarity ~1: the sanity check flags
them); a gradient method on the same trained model must change (positive control).  A
seeded random explainer must score at chance on localization and faithfulness.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_eval import metrics as M
from suites.support.models import mini_spec
from suites.support.suite_data import benchmark, final_similarity

MODEL = "mini_resnet"


@pytest.fixture(scope="module")
def data():
    spec = mini_spec(MODEL)
    syn = benchmark(16)
    return spec, spec.preprocess(syn.images), syn.masks


@pytest.mark.parametrize("control", ["constant", "edge_sobel"])
def test_model_blind_controls_fail_randomization(data, control, record):
    spec, x, _ = data
    curve = M.randomization_curve(spec, x[:4], M.CONTROLS[control], mode="cascading",
                                  similarity=("spearman_abs", "ssim"), reuse_explainer=True)
    record.curve(curve)
    final = final_similarity(curve)
    record("randomization_similarity", final, method=control, model=MODEL)
    assert np.all(final > 0.99), "a model-blind map changed under randomization: the metric is broken"


def test_gradient_passes_randomization(data, record):
    """Positive control on the same model: the plain gradient changes when weights do."""
    spec, x, _ = data
    curve = M.randomization_curve(spec, x[:4], "saliency", mode="cascading",
                                  similarity=("spearman_abs",), reuse_explainer=True)
    final = final_similarity(curve)
    record("randomization_similarity", final, method="saliency", model=MODEL)
    assert final.mean() < 0.5


def test_random_explainer_at_chance_on_localization(data, record):
    spec, x, masks = data
    pg, mass, chance_pg, chance_mass = [], [], [], []
    pointing = M.get_metric("pointing_game")()
    for seed in range(5):
        heat = M.RandomExplainer(spec, seed=seed).explain(x).heatmap
        pg.append(pointing.evaluate(heat, masks))
        mass.append(M.get_metric("relevance_mass_accuracy")().evaluate(heat, masks))
    pg, mass = np.mean(pg), np.mean(mass)
    # chance: a uniformly random maximum lands on the (tolerance-dilated) mask with its area share
    from cnnvis_eval.metrics.localization import dilate

    dilated = dilate(masks, pointing.pixels(masks.shape[1:]))
    chance_pg, chance_mass = dilated.mean(), masks.mean()
    record("pointing_game", pg, method="random", model=MODEL)
    record("relevance_mass_accuracy", mass, method="random", model=MODEL)
    assert abs(pg - chance_pg) < 0.15, (pg, chance_pg)
    assert abs(mass - chance_mass) < 0.02, (mass, chance_mass)
    gc = M.get_metric("pointing_game")().evaluate(
        __import__("cnnvis_eval").explain("grad_cam", spec, x).heatmap, masks).mean()
    assert gc > pg + 0.3, "Grad-CAM must beat the random explainer by far on a trained model"


def test_random_explainer_at_chance_on_faithfulness(data, record):
    """Deleting pixels in a random order or in its reverse makes no difference on average,
    while Grad-CAM's most-relevant-first deletion hurts far more than least-relevant-first."""
    import cnnvis_eval as cv

    spec, x, _ = data
    heat = M.RandomExplainer(spec, seed=0).explain(x).heatmap
    morf = M.get_metric("deletion_auc")().evaluate(spec, x, heat)
    lerf = M.get_metric("deletion_auc")().evaluate(spec, x, -heat)
    record("deletion_auc", morf, method="random", model=MODEL)
    gc = cv.explain("grad_cam", spec, x).heatmap
    gc_morf = M.get_metric("deletion_auc")().evaluate(spec, x, gc)
    gc_lerf = M.get_metric("deletion_auc")().evaluate(spec, x, -gc)
    gap_random = np.mean(lerf - morf)
    gap_gc = np.mean(gc_lerf - gc_morf)
    record("deletion_gap", [gap_random], method="random", model=MODEL, image="mean")
    record("deletion_gap", [gap_gc], method="grad_cam", model=MODEL, image="mean")
    scale = np.abs(cv.explain("saliency", spec, x).scores).mean()
    assert abs(gap_random) < 0.1 * scale, (gap_random, scale)
    assert gap_gc > abs(gap_random) + 0.2 * scale, (gap_gc, gap_random, scale)
