"""Localization on the synthetic benchmark: does the heatmap point at the object?

Every registered method on every trained mini model explains the true class of the
evaluation images, whose object masks are known.  Pointing game (Zhang et al. 2018),
relevance mass and rank accuracy (Arras et al. 2022) and the energy-based pointing game
(Wang et al. 2020) are recorded per image; Grad-CAM must hit the object in at least 80% of
the images, and every method (each claims to show where the evidence is) must beat a
seeded random explainer, averaged over the minis, on the pointing game (by 0.1) and on
relevance mass (by 0.02: RISE with 500 masks and DeconvNet put only 0.10-0.23 of their
positive mass on the object, against the 0.08 of its area).

A caution the numbers make plain: an input-only Sobel edge detector (a model-blind
control) also points at the object on this benchmark, because the object is the most
salient thing in the image.  Localization alone does not show a map explains the model;
read it together with the randomization suite.  The shortcut test below is the one that
needs the model: a method faithful to it must move relevance to the corner marker on the
models trained to use that marker.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from suites.support.models import MINI
from suites.sanity.test_randomization import EXPECTED as RANDOMIZATION_EXPECTED
from suites.support.suite_data import EVAL_IMAGES, explained, method_cases

LOCALIZATION = ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "energy_pointing_game")
CONTROLS = ("control:random", "control:edge_sobel")
# methods that pass every randomization check on every mini (no expected failure and no
# undecided cell in suites/sanity/test_randomization.py)
RANDOMIZATION_SENSITIVE = tuple(m for m in cv.list_methods()
                                if not any(m in cells for cells in RANDOMIZATION_EXPECTED.values()))


@functools.cache
def localization_scores(method: str, model: str, marker: bool = False) -> dict[str, np.ndarray]:
    """Per-image scores (N,) of every localization metric against the object masks."""
    e = explained(method, model, n=EVAL_IMAGES, marker=marker)
    return {m: M.get_metric(m)().evaluate(e.heatmap, e.data.masks) for m in LOCALIZATION}


def marker_mass(method: str, model: str) -> np.ndarray:
    """Share (N,) of the positive relevance on the shortcut marker, images with the marker."""
    e = explained(method, model, n=EVAL_IMAGES, marker=True)
    return M.get_metric("relevance_mass_accuracy")().evaluate(e.heatmap, e.data.marker_masks)


@pytest.fixture(scope="module")
def controls(module_record):
    """Localization of the model-blind controls per mini model (recorded, not asserted:
    their chance level is the negative-control suite's business)."""
    out = {}
    for control in CONTROLS:
        for model in MINI:
            scores = localization_scores(control, model)
            for metric, vals in scores.items():
                module_record(metric, vals, method=control.split(":")[1], model=model)
            out[control, model] = {k: float(np.nanmean(v)) for k, v in scores.items()}
    return out


def _method_scores(method, record):
    rows = {}
    for model in MINI:
        try:
            scores = localization_scores(method, model)
        except cv.errors.UnsupportedArchitectureError:
            continue  # CAM needs a GAP head (mini_vgg has a dense head)
        for metric, vals in scores.items():
            record(metric, vals, method=method, model=model)
        rows[model] = {k: float(np.nanmean(v)) for k, v in scores.items()}
    assert rows, f"{method} applies to no mini model"
    return rows


@pytest.mark.parametrize("method", method_cases(cv.list_methods()))
def test_beats_random_explainer(method, controls, record):
    rows = _method_scores(method, record)
    for metric in ("pointing_game", "relevance_mass_accuracy"):
        score = np.mean([r[metric] for r in rows.values()])
        chance = np.mean([controls["control:random", m][metric] for m in rows])
        record(f"{metric}_minus_random", score - chance, method=method, model="mean", image="mean")
        margin = 0.1 if metric == "pointing_game" else 0.02
        assert score > chance + margin, f"{method}: {metric} {score:.3f} vs random {chance:.3f} (mean over {list(rows)})"


def test_grad_cam_points_at_the_object():
    """Grad-CAM's maximum lies on the object (15 px tolerance at 224 px, scaled) in at least
    80% of the images of all minis together (measured 0.88 with the benchmark-v2 minis)."""
    per_model = {m: localization_scores("grad_cam", m)["pointing_game"] for m in MINI}
    pooled = np.nanmean(np.concatenate(list(per_model.values())))
    assert pooled >= 0.8, f"Grad-CAM pointing game {pooled:.3f} over all minis"


@pytest.mark.parametrize("model", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=(
        "measured: 0.47 on the 16 single-shape images since mini_mobilenet was trained on benchmark v2 "
        "(0.80 before), while its contrast pointing on scenes is 0.93; the cause is not investigated (the "
        "single-shape images also hold faint distractor shapes)"))) if m == "mini_mobilenet" else m
    for m in MINI])
def test_grad_cam_points_at_the_object_per_model(model):
    """At least 70% on each mini (measured 0.94-1.0, mini_mobilenet 0.47)."""
    score = float(np.nanmean(localization_scores("grad_cam", model)["pointing_game"]))
    assert score >= 0.7, f"Grad-CAM pointing game {score:.3f} on {model}"


@pytest.mark.parametrize("method", method_cases(RANDOMIZATION_SENSITIVE))
def test_shortcut_models_put_relevance_on_the_marker(method, record):
    """Images carry the corner marker.  The models trained on the shortcut data use it (their
    accuracy drops to chance when it moves: cnnvis_eval/models/mini_models/manifest.json); the clean models
    never saw it.  A method that passes the randomization sanity checks must put more of its
    relevance on the marker for the shortcut model than for the clean model of the same
    architecture, on every architecture."""
    ratios = {}
    for model in MINI:
        try:
            clean = marker_mass(method, model)
            shortcut = marker_mass(method, f"{model}_shortcut")
        except cv.errors.UnsupportedArchitectureError:
            continue
        record("marker_relevance_mass", clean, method=method, model=model)
        record("marker_relevance_mass", shortcut, method=method, model=f"{model}_shortcut")
        ratios[model] = (float(np.mean(clean)), float(np.mean(shortcut)))
    assert ratios, f"{method} applies to no mini model"
    failed = {m: r for m, r in ratios.items() if not r[1] > r[0]}
    assert not failed, f"{method}: marker mass (clean, shortcut) not higher on {failed}"
    # a clean model with no relevance on the marker at all (RISE on the benchmark-v2 minis)
    # makes its ratio infinite, which passes
    with np.errstate(divide="ignore"):
        gmean = float(np.exp(np.mean([np.log(np.float64(s) / np.float64(c)) for c, s in ratios.values()])))
    record("marker_mass_ratio", gmean, method=method, model="gmean", image="mean")
    assert gmean >= 2, f"{method}: marker mass ratio shortcut/clean {gmean:.2f} (per model {ratios})"
