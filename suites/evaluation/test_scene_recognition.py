"""Class discrimination on benchmark v2 scenes (issue 16, section 3): the literature as tests.

A scene holds 2-3 objects of different classes; every object of 12 scenes (seed 12) is
explained in turn on each clean mini model (trained on benchmark v2: it sees every object of
a scene, see ``suites/unit/test_mini.py``).  Two measurements per method and model:

- **class contrast mass** (``class_contrast_mass``): (d_target - d_others) / (d_target +
  d_others), d the mean positive relevance per pixel on the explained object and on the
  others; chance 0;
- **class-map similarity**: the Spearman rank correlation between the maps of two different
  classes of the same scene (``spearman_signed`` similarity metric), averaged over pairs; 1 for a
  map that ignores the class.

A method is **class-discriminative** when its maps move with the class (similarity <=
:data:`SIMILAR`) and land on the explained object (contrast mass >= :data:`CONTRAST`).
Expected, as the literature predicts:

- Grad-CAM is class-discriminative (Selvaraju et al. 2017; the study's conclusion, L2977-2981:
  it is the best method because it is class-discriminative);
- Guided Backprop, DeconvNet and the z+ presets (Deep Taylor, its bounded variant,
  LRP-alpha1beta0) are not: their maps reconstruct the image whatever the class (Nie et al.
  2018, "A theoretical explanation for perplexing behaviors of backpropagation-based
  visualizations"; Sixt et al. 2020, "When explanations lie: why many modified BP
  attributions fail") — strict expected failures, which flip loudly if a change made them pass;
- LRP-epsilon and gradient x input follow the class (their maps change with it);
- the model-blind controls (Sobel edges, noise) fail every class-contrast check.

Measured on the five minis (seed 12, 30 targets each; see the issue-16 note): Grad-CAM
contrast 0.69-0.75, similarity 0.06-0.17; Guided Backprop similarity 0.88-0.91; the z+
presets 0.78-0.94; DeconvNet contrast -0.01-0.00; LRP-epsilon / gradient x input similarity
-0.08 to -0.04; controls contrast <= 0.01, similarity 1.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.data import make_scenes
from cnnvis_eval.models.mini import preprocess
from cnnvis_eval.targets import ClassTarget
from suites.support.models import MINI, mini_spec

SCENES, SEED = 12, 12
CONTRAST = 0.3  # class contrast mass a class-discriminative method reaches (chance 0)
SIMILAR = 0.5  # class-map similarity above which the map ignores the class

NIE = "Nie et al. 2018 / Sixt et al. 2020: modified-backprop maps reconstruct the image whatever the class"


@pytest.fixture(scope="module")
def scenes():
    s = make_scenes(SCENES, 64, seed=SEED)
    pairs = [(i, k) for i in range(len(s)) for k in range(len(s.object_masks[i]))]
    return {
        "x": preprocess(s.images[[i for i, _ in pairs]]),
        "image": np.array([i for i, _ in pairs]),
        "mask": np.stack([s.object_masks[i][k] for i, k in pairs]),
        "other": np.stack([np.delete(s.object_masks[i], k, 0).any(0) for i, k in pairs]),
        "target": ClassTarget([int(s.object_classes[i][k]) for i, k in pairs]),
    }


def measure(h: np.ndarray, scenes: dict) -> dict:
    """Mean contrast mass, contrast pointing game, and class-map similarity of maps ``h``."""
    sims = []
    for i in np.unique(scenes["image"]):
        idx = np.flatnonzero(scenes["image"] == i)
        a, b = np.triu_indices(len(idx), 1)
        sims += list(M.evaluate("spearman_signed", h[idx[a]], h[idx[b]]))
    return {"contrast": float(np.nanmean(M.evaluate("class_contrast_mass", h, scenes["mask"], scenes["other"]))),
            "pointing": float(np.nanmean(M.evaluate("contrast_pointing_game", h, scenes["mask"], scenes["other"]))),
            "similarity": float(np.nanmean(sims))}


def maps_of(method: str, model: str, scenes: dict) -> np.ndarray:
    return cv.explain(method, mini_spec(model), scenes["x"], target=scenes["target"], progress=False).heatmap


def _xfail(reason):
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


@pytest.mark.parametrize("model", MINI)
@pytest.mark.parametrize("method", [
    "grad_cam",
    pytest.param("guided_backprop", marks=_xfail(NIE)),
    pytest.param("deconvnet", marks=_xfail(NIE)),
    pytest.param("deep_taylor", marks=_xfail(NIE + " (z+ rule)")),
    pytest.param("deep_taylor_bounded", marks=_xfail(NIE + " (z+ rule)")),
    pytest.param("lrp_alpha1beta0", marks=_xfail(NIE + " (z+ rule)")),
])
def test_class_discriminative(method, model, scenes):
    got = measure(maps_of(method, model, scenes), scenes)
    assert got["similarity"] <= SIMILAR and got["contrast"] >= CONTRAST, got


@pytest.mark.parametrize("model", MINI)
@pytest.mark.parametrize("method", ["lrp_epsilon", "gradient_x_input", "grad_cam"])
def test_maps_follow_the_class(method, model, scenes):
    got = measure(maps_of(method, model, scenes), scenes)
    assert got["similarity"] <= SIMILAR and got["contrast"] > 0, got


@pytest.mark.parametrize("model", MINI)
@pytest.mark.parametrize("control", ["edge_sobel", "random"])
def test_model_blind_controls_fail_every_class_contrast_check(control, model, scenes):
    spec = mini_spec(model)
    explainer = M.CONTROLS[control](spec, seed=0) if control == "random" else M.CONTROLS[control](spec)
    h = explainer.explain(scenes["x"], target=scenes["target"]).heatmap
    got = measure(h, scenes)
    mask, other = scenes["mask"].sum((1, 2)), scenes["other"].sum((1, 2))
    chance = float(np.mean(mask / (mask + other)))
    assert abs(got["contrast"]) < 0.05, got
    assert abs(got["pointing"] - chance) < 0.1, (got, chance)
    assert got["similarity"] > 0.99, got  # the same map whatever the class
    assert not (got["similarity"] <= SIMILAR or got["contrast"] >= CONTRAST)
