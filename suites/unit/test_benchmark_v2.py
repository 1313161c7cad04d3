"""Benchmark v2 as one labelled set, the run's image set with scenes and birds, and the
study's Table 2 counterpart (issue 16)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from cnnvis_eval.data.benchmark import BIRD_OFFSET, CLASSES_V2, make_benchmark, set_accuracy
from cnnvis_eval.data.parts import PART_CLASSES
from cnnvis_eval.data.scenes import make_scenes
from cnnvis_eval.data.synthetic import CLASSES
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation.inputs import ImageSet
from cnnvis_eval.metrics import get_metric
from cnnvis_eval.report import study
from suites.support.grid_fixtures import cell_file


# ---------------------------------------------------------------------- the labelled mixture
def test_benchmark_mixture_labels_every_object_and_is_deterministic():
    b = make_benchmark(6, 10, 8, size=64, seed=5)
    assert b.images.shape == (24, 64, 64, 3) and b.images.dtype == np.uint8
    assert b.classes == CLASSES_V2 == tuple(CLASSES) + tuple(PART_CLASSES)
    k = b.targets.sum(1)
    assert sorted(np.unique(b.kind)) == ["bird", "scene", "shape"]
    assert (k[b.kind == "shape"] == 1).all() and (k[b.kind == "bird"] == 1).all()
    assert set(k[b.kind == "scene"]) <= {2, 3}
    # shapes and scenes use shape classes only, birds bird classes only
    assert b.targets[b.kind != "bird"][:, BIRD_OFFSET:].sum() == 0
    assert b.targets[b.kind == "bird"][:, :BIRD_OFFSET].sum() == 0
    # the scenes' targets are the classes of their objects, drawn as make_scenes draws them
    scenes = make_scenes(10, 64, seed=6)
    want = sorted(tuple(sorted(c.tolist())) for c in scenes.object_classes)
    got = sorted(tuple(np.flatnonzero(t).tolist()) for t in b.targets[b.kind == "scene"])
    assert got == want
    again = make_benchmark(6, 10, 8, size=64, seed=5)
    assert np.array_equal(again.images, b.images) and np.array_equal(again.targets, b.targets)


def test_benchmark_needs_an_image():
    with pytest.raises(InputError, match="at least one image"):
        make_benchmark(0, 0, 0)


def test_set_accuracy_is_the_exact_top_k_set():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 5.0, 4.0, 1.0], [1.0, 0.0, 2.0, 3.0], [0.1, 0.0, 0.3, 0.2]])
    targets = np.zeros((4, 4))
    targets[0, [0, 1]] = targets[1, [1, 3]] = targets[2, [0, 2, 3]] = targets[3, 2] = 1
    # by hand: {0,1} ok; top-2 {1,2} != {1,3}; top-3 {3,2,0} ok; top-1 2 ok
    assert set_accuracy(logits, targets).tolist() == [1.0, 0.0, 1.0, 1.0]


# ---------------------------------------------------------------------- target masks of a run's images
def _scene_set(knows=True):
    h = w = 8
    a = np.zeros((h, w), bool)
    a[:3, :3] = True
    b = np.zeros((h, w), bool)
    b[5:, 5:] = True
    shape = np.zeros((h, w), bool)
    shape[2:6, 2:6] = True
    objects = [None, (np.stack([a, b]), np.array([2, 0])), None]
    return ImageSet(np.zeros((4, h, w, 3), np.uint8), ["syn000", "scene000", "bird000", "photo"],
                    [shape, a | b, shape, None], objects=objects + [None], knows_classes=knows), a, b, shape


def test_target_masks_pick_the_explained_object():
    imgs, a, b, shape = _scene_set()
    mask, other = imgs.target_masks(np.array([1, 0, 5, 3]))
    assert mask.shape == (3, 8, 8)  # the three images with a mask, in order
    assert np.array_equal(mask[0], shape) and not other[0].any()
    assert np.array_equal(mask[1], b) and np.array_equal(other[1], a)  # class 0 is object b
    mask, other = imgs.target_masks(np.array([1, 2, 5, 3]))
    assert np.array_equal(mask[1], a) and np.array_equal(other[1], b)
    mask, other = imgs.target_masks(np.array([1, 3, 5, 3]))  # class 3 is not in the scene
    assert not mask[1].any() and np.array_equal(other[1], a | b)
    assert imgs.scene_index.tolist() == [False, True, False, False]


def test_target_masks_of_a_model_without_the_benchmark_classes_are_empty():
    imgs, a, b, shape = _scene_set(knows=False)
    mask, _ = imgs.target_masks(np.array([1, 2, 5, 3]))  # index 2 means another class to this model
    assert not mask[1].any() and np.array_equal(mask[0], shape)


# ---------------------------------------------------------------------- compactness
def _compactness_reference(m: np.ndarray, top: float = 0.05) -> float:
    """Independent: top pixels by sorting, components by scipy's default cross + diagonal
    flood via skimage, mass shares summed in float64 loops."""
    from skimage.measure import label

    k = max(1, int(round(top * m.size)))
    kth = np.sort(m.ravel())[::-1][k - 1]
    chosen = (m >= kth) & (m > 0)
    if not chosen.any() or chosen.sum() > 2 * k:
        return 0.0
    lab = label(chosen, connectivity=2)
    masses = [float(m[lab == j].sum()) for j in range(1, lab.max() + 1)]
    return max(masses) / sum(masses)


@pytest.mark.parametrize("case", ["blob", "two_blobs", "noise", "constant", "negative", "zero", "diagonal"])
def test_compactness_against_an_independent_reference(case):
    rng = np.random.default_rng(3)
    m = np.zeros((40, 40))
    if case == "blob":
        m[5:14, 5:14] = 1 + rng.random((9, 9))
    elif case == "two_blobs":
        m[2:7, 2:7] = 1.0
        m[30:35, 30:35] = 1.0
    elif case == "noise":
        m = rng.random((40, 40))
    elif case == "constant":
        m[:] = 2.0
    elif case == "negative":
        m[5:14, 5:14] = -1.0
    elif case == "diagonal":  # 8-connected only
        m[np.arange(40), np.arange(40)] = 1.0 + rng.random(40)
        m[np.arange(39), np.arange(1, 40)] = 0.5 + rng.random(39) * 0.1
    got = float(get_metric("compactness")().evaluate(m[None])[0])
    assert got == pytest.approx(_compactness_reference(m), abs=1e-12)
    expected = {"blob": 1.0, "two_blobs": 0.5, "constant": 0.0, "negative": 0.0, "zero": 0.0}
    if case in expected:
        assert got == pytest.approx(expected[case])
    if case == "noise":
        assert got < 0.2


def test_compactness_rejects_a_bad_fraction():
    with pytest.raises(InputError, match="top must be a fraction"):
        get_metric("compactness")(top=0.9)


# ---------------------------------------------------------------------- the study's Table 2
def test_study_table_is_the_issue_transcription():
    totals = study.STUDY_TABLE2.sum(axis=1)
    # the study's totals as stated next to its per-architecture numbers
    assert totals.to_dict() == {"deconvnet": 4, "saliency": 17, "guided_backprop": 22, "grad_cam": 50,
                                "guided_grad_cam": 49, "deep_taylor": 25, "lime": 36}
    assert study.STUDY_TABLE2.loc["grad_cam", "ResNet50"] == 13
    assert study.STUDY_TABLE2.loc["guided_backprop", "MobileNetV2"] == 0


def _frame(rows):
    return pd.DataFrame(rows, columns=["method", "model", "image", "neuron", "metric", "value"])


def test_cell_rule_by_hand():
    r = [
        # logit on a scene: hit needs pointing > 0.5 and contrast > 0
        ("grad_cam", "mini_vgg", "scene000", "logit", "pointing_game", 1.0),
        ("grad_cam", "mini_vgg", "scene000", "logit", "class_contrast_mass", 0.4),
        ("saliency", "mini_vgg", "scene000", "logit", "pointing_game", 1.0),
        ("saliency", "mini_vgg", "scene000", "logit", "class_contrast_mass", -0.1),
        # logit on a single shape: pointing alone; a tie at 0.5 is a miss
        ("grad_cam", "mini_vgg", "syn000", "logit", "pointing_game", 0.5),
        ("saliency", "mini_vgg", "syn000", "logit", "pointing_game", 0.75),
        # the logit neuron's compactness is not part of the rule
        ("saliency", "mini_vgg", "syn000", "logit", "compactness", 0.9),
        # intermediate neurons: compactness >= 0.5, photos included
        ("grad_cam", "mini_vgg", "chelsea", "mid", "compactness", 0.5),
        ("grad_cam", "mini_vgg", "chelsea", "high", "compactness", 0.49),
        ("saliency", "mini_resnet", "chelsea", "high", "compactness", 0.8),
        # not a study method, not a study architecture, a control: left out
        ("occlusion", "mini_vgg", "syn000", "logit", "pointing_game", 1.0),
        ("grad_cam", "my_model", "syn000", "logit", "pointing_game", 1.0),
        ("control:random", "mini_vgg", "syn000", "logit", "pointing_game", 1.0),
    ]
    hits = study.cell_hits(_frame(r)).set_index(["method", "model", "image", "neuron"])["hit"]
    assert hits.to_dict() == {
        ("grad_cam", "mini_vgg", "scene000", "logit"): 1, ("saliency", "mini_vgg", "scene000", "logit"): 0,
        ("grad_cam", "mini_vgg", "syn000", "logit"): 0, ("saliency", "mini_vgg", "syn000", "logit"): 1,
        ("grad_cam", "mini_vgg", "chelsea", "mid"): 1, ("grad_cam", "mini_vgg", "chelsea", "high"): 0,
        ("saliency", "mini_resnet", "chelsea", "high"): 1}
    ours, cells = study.table2(_frame(r))
    assert list(ours.index) == ["saliency", "grad_cam"]  # study order
    assert ours.loc["grad_cam", "VGG16"] == 2 and cells.loc["grad_cam", "VGG16"] == 4
    assert ours.loc["saliency", "total"] == 2 and cells.loc["saliency", "total"] == 3


def test_compare_rank_correlation_and_disagreement():
    totals = study.STUDY_TABLE2.sum(axis=1)
    same = pd.DataFrame({"total": totals * 2})
    got = study.compare(same)
    assert got["rho"] == pytest.approx(1.0) and "alike" in got["sentence"]
    swapped = totals.copy()
    swapped["deconvnet"], swapped["grad_cam"] = 60, 0  # worst and best swap
    got = study.compare(pd.DataFrame({"total": swapped}))
    assert got["rho"] == pytest.approx(spearmanr(totals, swapped).statistic)
    assert "deconvnet ranks 1st here and 7th in the study" in got["sentence"]
    assert "grad_cam ranks 7th here and 1st in the study" in got["sentence"]


# ---------------------------------------------------------------------- the grid on benchmark v2
def test_grid_scores_scenes_and_birds_with_controls(tmp_path):
    """A run with scenes and birds on a benchmark-v2 mini: class contrast on the scenes only,
    part correctness on the birds only (importances recomputed here with plain predict
    calls), the pointing game of a scene on the object of the explained class, and the
    model-blind controls scored beside the methods but not ranked."""
    from cnnvis_eval.data.parts import make_parts
    from cnnvis_eval.evaluation import GridRun, RunConfig
    from cnnvis_eval.evaluation.inputs import image_set
    from cnnvis_eval.metrics import evaluate
    from cnnvis_eval.report.tables import totals
    from suites.support.models import mini_spec

    cfg = RunConfig(models=("mini_mobilenet",), methods=("grad_cam", "deconvnet"), photos=(), synthetic=1,
                    scenes=2, birds=2, stages=("localization", "contrast", "parts"))
    results = GridRun(cfg, tmp_path, progress=False, log=None, workers=1).run()
    by = results.set_index(["metric", "method", "image"])["value"]
    contrast = results[results["metric"] == "class_contrast_mass"]
    assert set(contrast["image"]) == {"scene000", "scene001"}
    assert set(results[results["metric"] == "part_importance_correlation"]["image"]) == {"bird000", "bird001"}
    assert {"control:edge_sobel", "control:random"} <= set(contrast["method"])
    assert not totals(results).index.str.startswith("control:").any()

    spec = mini_spec("mini_mobilenet")
    imgs = image_set(spec, cfg)
    x = spec.preprocess(imgs.images)
    with np.load(cell_file(tmp_path, "mini_mobilenet", "grad_cam", "logit")) as z:
        heat, idx = z["heatmap"], z["indices"]
    logits = spec.model.predict(x, verbose=0)
    assert np.array_equal(idx, logits.argmax(1))  # the cell explained the top class
    # scene: the pointing game on the object of the explained class
    k = imgs.ids.index("scene000")
    obj, cls = imgs.objects[k]
    assert int(idx[k]) in cls.tolist()  # a v2 mini's top class is one of the scene's objects
    want = evaluate("pointing_game", heat[k:k + 1], obj[cls == idx[k]])[0]
    assert by["pointing_game", "grad_cam", "scene000"] == pytest.approx(want)
    # birds: importance = logit drop under part removal, by plain predict calls
    birds = make_parts(2, 64, seed=30_000 + cfg.seed)
    b = imgs.ids.index("bird000")
    removed = spec.preprocess(birds.counterfactuals()[0])
    drop = logits[b, idx[b]] - spec.model.predict(removed, verbose=0)[:, idx[b]]
    want = evaluate("part_importance_correlation", heat[b:b + 1], birds.part_masks[:1], drop[None])[0]
    assert by["part_importance_correlation", "grad_cam", "bird000"] == pytest.approx(want, abs=1e-6)
    # the random control stands for chance: the mean score of RANDOM_DRAWS seeded random maps
    from cnnvis_eval.evaluation.stages import RANDOM_DRAWS
    from cnnvis_eval.metrics import RandomExplainer

    draws = [evaluate("part_importance_correlation",
                      RandomExplainer(spec, seed=cfg.seed + k).explain(x[b:b + 1], progress=False).heatmap,
                      birds.part_masks[:1], drop[None])[0] for k in range(RANDOM_DRAWS)]
    assert by["part_importance_correlation", "control:random", "bird000"] == pytest.approx(np.mean(draws),
                                                                                            abs=1e-6)
