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
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_eval.data import make_scenes
from cnnvis_eval.models.mini import preprocess
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
@pytest.mark.xfail(strict=True, reason="the shipped minis are trained on single objects (measured top-k set "
                                       "accuracy 0.34-0.53 on scenes, chance 0.21); issue 16.1 retrains them")
@pytest.mark.parametrize("model", mini_params(MINI))
def test_minis_see_every_object_of_a_scene(model):
    scenes = make_scenes(SCENES, 64, seed=SEED)
    logits = mini_spec(model).model.predict(preprocess(scenes.images), verbose=0)
    assert top_k_set_accuracy(logits, scenes.object_classes) >= TOP_K_NEEDED
