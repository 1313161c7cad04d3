"""Do the trained minis see every object of a benchmark v2 scene (issue 16)?

Class contrast (:mod:`cnnvis_eval.metrics.localization`, ``class_contrast_mass``,
``contrast_pointing_game``) asks the map of class A to sit on object A of a scene holding
objects of 2-3 classes.  That only measures the *method* when the model itself responds to
every object: the present classes must be its top-k logits (k = objects in the scene).

The shipped minis were trained on one object per image (:mod:`cnnvis_eval.models.mini`),
and they do not generalize to clutter: measured on 32 scenes (seed 11), the set of the
top-k logits equals the set of present classes in 0.41 / 0.53 / 0.34 / 0.41 / 0.53 of the
scenes (vgg, resnet, inception, xception, mobilenet; chance 0.21), so class contrast stays
out of the default run until the minis are trained on scenes (issue 16.1).  The test is an
expected failure until then; ``strict`` makes it fail loudly once retrained minis pass.

Even so the maps already separate on class contrast (every object of 16 scenes, seed 12,
explained in turn; 40 targets): Grad-CAM's contrast mass is 0.50-0.76 per mini, DeconvNet's
-0.01-0.09 (Nie et al. 2018: it reconstructs the image, not the class), the Sobel and random
controls 0.009 and 0.000 (chance 0); pointing 0.40 for both controls (chance 0.40).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.data import make_scenes
from cnnvis_eval.models.mini import preprocess
from cnnvis_eval.targets import ClassTarget
from suites.support.models import MINI, mini_params, mini_spec

SCENES, SEED = 32, 11
TOP_K_NEEDED = 0.8


def top_k_set_accuracy(logits: np.ndarray, classes: list) -> float:
    """Share of scenes whose k largest logits (k = objects in the scene) are exactly the
    scene's classes; ``logits`` (N, C), ``classes`` N int arrays."""
    return float(np.mean([set(np.argsort(-lg)[: len(c)]) == set(c.tolist()) for lg, c in zip(logits, classes)]))


def test_top_k_set_accuracy_hand_computed():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 5.0, 4.0, 1.0], [1.0, 0.0, 2.0, 3.0]])
    classes = [np.array([1, 0]), np.array([1, 3]), np.array([3, 2, 0])]
    # scene 0: top-2 {0, 1} = {0, 1}; scene 1: top-2 {1, 2} != {1, 3}; scene 2: top-3 {3, 2, 0}
    assert top_k_set_accuracy(logits, classes) == pytest.approx(2 / 3)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason="the shipped minis are trained on single objects (measured top-k set "
                                       "accuracy 0.34-0.53 on scenes, chance 0.21); issue 16.1 retrains them")
@pytest.mark.parametrize("model", mini_params(MINI))
def test_minis_see_every_object_of_a_scene(model):
    scenes = make_scenes(SCENES, 64, seed=SEED)
    logits = mini_spec(model).model.predict(preprocess(scenes.images), verbose=0)
    assert top_k_set_accuracy(logits, scenes.object_classes) >= TOP_K_NEEDED


@pytest.mark.slow
@pytest.mark.parametrize("model", mini_params(MINI))
def test_grad_cam_is_class_discriminative_on_scenes_and_deconvnet_and_controls_are_not(model):
    """Measured margins: Grad-CAM - DeconvNet >= 0.41 (mini_vgg) on the contrast mass; the
    controls within 0.01 of chance."""
    spec = mini_spec(model)
    scenes = make_scenes(16, 64, seed=12)
    pairs = [(i, k) for i in range(len(scenes)) for k in range(len(scenes.object_masks[i]))]
    x = preprocess(scenes.images[[i for i, _ in pairs]])
    mask = np.stack([scenes.object_masks[i][k] for i, k in pairs])
    other = np.stack([np.delete(scenes.object_masks[i], k, 0).any(0) for i, k in pairs])
    target = ClassTarget([int(scenes.object_classes[i][k]) for i, k in pairs])
    maps = {m: cv.explain(m, spec, x, target=target, progress=False).heatmap for m in ("grad_cam", "deconvnet")}
    maps["edge_sobel"] = M.EdgeExplainer(spec).explain(x, target=target).heatmap
    maps["random"] = M.RandomExplainer(spec, seed=0).explain(x, target=target).heatmap
    mass = {m: float(np.nanmean(M.evaluate("class_contrast_mass", h, mask, other))) for m, h in maps.items()}
    point = {m: float(np.nanmean(M.evaluate("contrast_pointing_game", h, mask, other))) for m, h in maps.items()}
    chance = float(np.mean(mask.sum((1, 2)) / (mask.sum((1, 2)) + other.sum((1, 2)))))
    assert mass["grad_cam"] >= 0.4 and mass["grad_cam"] >= mass["deconvnet"] + 0.3, mass
    for control in ("edge_sobel", "random"):
        assert abs(mass[control]) < 0.05, mass
        assert abs(point[control] - chance) < 0.1, (point, chance)
