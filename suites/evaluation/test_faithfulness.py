"""Faithfulness on the synthetic benchmark: does removing what the map calls important
change the model's output?

Every registered method on every trained mini model (the same heatmaps as the
localization suite) is scored by deletion and insertion AUC (Petsiuk et al. 2018:
deletion towards zeros in the model's input space, insertion from an 11x11 sigma-5 blur,
256 pixels per step, trapezoid AUC; the score is the explained class
logit).  Both are recorded per image.  Every method must order pixels better than a seeded
random explainer, averaged over the minis: a lower deletion AUC and a higher insertion AUC.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from suites.support.models import MINI
from suites.support.suite_data import EVAL_IMAGES, SLOW_METHODS, explained, method_cases

FAITHFULNESS = ("deletion_auc", "insertion_auc")
# 16 steps per curve at 64x64 px (4 rows of pixels per step; the metric's default, one
# row per step as Petsiuk et al., gives 64 steps and changes no conclusion here at 4x the
# cost)
PIXELS_PER_STEP = 256


@functools.cache
def faithfulness_scores(method: str, model: str) -> dict[str, np.ndarray]:
    """Per-image deletion and insertion AUC (N,) of ``method``'s maps on ``model``."""
    e = explained(method, model, n=EVAL_IMAGES)
    target = cv.ClassTarget(e.data.labels)
    return {m: M.get_metric(m)(pixels_per_step=PIXELS_PER_STEP).evaluate(e.spec, e.x, e.heatmap, target)
            for m in FAITHFULNESS}


@pytest.fixture(scope="module")
def random_scores(module_record):
    out = {}
    for model in MINI:
        scores = faithfulness_scores("control:random", model)
        for metric, vals in scores.items():
            module_record(metric, vals, method="random", model=model)
        out[model] = {k: float(np.mean(v)) for k, v in scores.items()}
    return out


def _scores(method: str) -> dict[str, dict[str, float]]:
    """{model: {metric: mean over images}} for the minis ``method`` applies to."""
    rows = {}
    for model in MINI:
        try:
            scores = faithfulness_scores(method, model)
        except cv.errors.UnsupportedArchitectureError:
            continue  # CAM needs a GAP head
        rows[model] = {k: float(np.mean(v)) for k, v in scores.items()}
    assert rows, f"{method} applies to no mini model"
    return rows


# (method -> minis) where insertion is measured below the random order: asserted exactly, so
# a change either way fails (as a strict xfail would).  VarGrad on the benchmark-v2
# mini_inception: insertion AUC 0.97 vs the random order's 2.67 (the variance of noisy
# gradients, no sign; no literature claim).
INSERTION_LOSES = {"vargrad": {"mini_inception"}}


@pytest.mark.parametrize("method", method_cases(cv.list_methods()))
def test_beats_random_order(method, random_scores, record):
    """Insertion: above the random order on every mini.  Deletion: below it on most minis
    (see :func:`test_deletion_beats_random_per_model` for the exception)."""
    rows = _scores(method)
    for model in rows:
        for metric, vals in faithfulness_scores(method, model).items():
            record(metric, vals, method=method, model=model)
    ins_lose = {m: (r["insertion_auc"], random_scores[m]["insertion_auc"]) for m, r in rows.items()
                if not r["insertion_auc"] > random_scores[m]["insertion_auc"]}
    del_win = [m for m, r in rows.items() if r["deletion_auc"] < random_scores[m]["deletion_auc"]]
    record("faithfulness_wins_vs_random", [len(rows) - len(ins_lose), len(del_win)], method=method,
           model="mean", image=["insertion", "deletion"])
    assert set(ins_lose) == INSERTION_LOSES.get(method, set()), (
        f"{method}: insertion AUC not above the random order's on {ins_lose}")
    assert len(del_win) > len(rows) / 2, f"{method}: deletion AUC below random only on {del_win}"


@pytest.mark.parametrize("model", MINI)
def test_deletion_beats_random_per_model(model, random_scores):
    """On each mini, at least 80% of the methods delete the evidence faster than a random order.
    (Before benchmark v2, zero-filled deletion failed this on mini_inception: scattered zero
    pixels lowered its logit faster than deleting the object — an off-distribution artefact,
    Hooker et al. 2019, Rong et al. 2022.  The retrained mini_inception, whose stem keeps 32x32,
    passes; ROAD's imputation, below, does not depend on it.)"""
    deletion = {}
    for method in cv.list_methods():
        if method in SLOW_METHODS:  # suite budget (see suite_data.SLOW_METHODS)
            continue
        try:
            deletion[method] = float(np.mean(faithfulness_scores(method, model)["deletion_auc"]))
        except cv.errors.UnsupportedArchitectureError:
            continue
    wins = [m for m, v in deletion.items() if v < random_scores[model]["deletion_auc"]]
    methods = deletion
    assert len(wins) >= 0.8 * len(methods), f"{model}: only {wins} beat the random deletion order"


def test_edge_detector_is_not_faithful(random_scores, record):
    """The model-blind Sobel control localizes the object (see the localization suite), but
    deleting its edges first does not take the class evidence away: its deletion AUC stays
    above the random order's on every mini — the faithfulness metrics see what localization
    cannot."""
    worse = {}
    for m in MINI:
        edge = faithfulness_scores("control:edge_sobel", m)
        for metric, vals in edge.items():
            record(metric, vals, method="edge_sobel", model=m)
        worse[m] = float(np.mean(edge["deletion_auc"])) > random_scores[m]["deletion_auc"]
    assert all(worse.values()), worse


# ROAD (issue 16): a study-sized set of methods, the fast ones of each family
ROAD_METHODS = ("saliency", "gradient_x_input", "integrated_gradients", "grad_cam", "guided_grad_cam",
                "guided_backprop", "deep_taylor", "lrp_epsilon", "occlusion", "lime")


@functools.cache
def _road_metric():
    # one object for the whole session: the random orders' curves of an image set are
    # computed once and shared by every method (cnnvis_eval.metrics.faithfulness.normalized)
    return M.get_metric("road_morf_gain")()


@pytest.mark.parametrize("model", MINI)
def test_road_deletion_beats_random_per_model(model, record):
    """ROAD (Rong et al. 2022): removed pixels are imputed from their neighbours (plus a
    little noise) instead of set to zero, so the removal leaves nothing off-distribution for
    the model to react to.  Scored as a gain over random orders per |clean logit|
    (``road_morf_gain``: 0 = no better than random), at least 80% of the methods beat a
    random order on every mini (the off-distribution artefact zero fill showed on the earlier
    mini_inception cannot decide this verdict)."""
    gains = {}
    for method in ROAD_METHODS:
        try:
            e = explained(method, model, n=EVAL_IMAGES)
        except cv.errors.UnsupportedArchitectureError:
            continue
        vals = _road_metric().evaluate(e.spec, e.x, e.heatmap, cv.ClassTarget(e.data.labels))
        record("road_morf_gain", vals, method=method, model=model)
        gains[method] = float(np.nanmean(vals))
    wins = [m for m, g in gains.items() if g > 0]
    assert len(wins) >= 0.8 * len(gains), f"{model}: only {wins} beat random orders under ROAD ({gains})"
