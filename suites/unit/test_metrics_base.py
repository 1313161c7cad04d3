"""The Metric skeleton: registry, batching, validation, long-format results."""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError
from cnnvis_eval.metrics import base as B

EXPECTED = {
    "similarity": {"spearman_abs", "spearman_signed", "ssim", "hog", "pearson", "topk_iou", "cosine"},
    "randomization": {"model_randomization", "random_logit"},
    "faithfulness": {"deletion_auc", "insertion_auc", "aopc_morf", "aopc_lerf", "deletion_gain", "insertion_gain",
                     "road_morf_gain", "road_lerf_gain"},
    "localization": {"pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "energy_pointing_game",
                     "class_contrast_mass", "contrast_pointing_game", "part_importance_correlation",
                     "suppressor_mass"},
    "complexity": {"sparseness", "entropy", "compactness"},
    "axioms": {"conservation_error", "input_invariance_error"},
}


@pytest.mark.parametrize("category", sorted(EXPECTED))
def test_registry_by_category(category):
    assert set(M.list_metrics(category)) == EXPECTED[category]
    for name in EXPECTED[category]:
        cls = M.get_metric(name)
        assert cls.name == name and cls.category == category
        assert isinstance(cls.higher_is_better, bool)
        assert cls.__doc__


def test_registry_errors():
    with pytest.raises(InputError, match="pointing_game"):
        M.get_metric("pointing_gam")
    with pytest.raises(InputError, match="category"):
        M.list_metrics("speed")
    with pytest.raises(ValueError, match="registered twice"):

        @M.register_metric
        class Clash(M.Metric):
            name = "entropy"
            category = "complexity"


def test_register_custom_metric_and_skeleton():
    calls = []

    @M.register_metric
    class MeanValue(M.Metric):
        """Mean of each map."""

        name = "_test_mean_value"
        category = "complexity"
        per_image = ("heatmap",)

        def evaluate_batch(self, heatmap, offset=0.0):
            calls.append(len(heatmap))
            return heatmap.reshape(len(heatmap), -1).mean(1) + offset

    try:
        h = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
        m = M.get_metric("_test_mean_value")()
        full = m.evaluate(h, offset=1.0)
        assert calls == [5]
        split = m.evaluate(h, batch_size=2, offset=1.0)
        assert calls[1:] == [2, 2, 1]
        np.testing.assert_array_equal(full, split)
        np.testing.assert_allclose(full, h.reshape(5, -1).mean(1) + 1.0)
        assert full.dtype == np.float64 and full.shape == (5,)
        assert "_test_mean_value" in M.list_metrics("complexity")
    finally:
        B.METRICS.remove("_test_mean_value")


def test_validation_errors():
    a = np.random.default_rng(0).random((3, 8, 8))
    spear = M.get_metric("spearman_abs")()
    with pytest.raises(InputError, match="disagree on the number of images"):
        spear.evaluate(a, a[:2])
    bad = a.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"NaN or inf \(first at index \(1, 2, 3\)\)"):
        spear.evaluate(a, bad)
    with pytest.raises(InputError, match=r"m\[None\]"):
        spear.evaluate(a[0], a[0])
    with pytest.raises(InputError, match="shape"):
        spear.evaluate(a, a[:, :4])
    with pytest.raises(InputError, match="evaluate"):
        spear.evaluate(a, a, c=a)
    with pytest.raises(InputError, match="batch_size"):
        spear.evaluate(a, a, batch_size=0)
    with pytest.raises(InputError, match="empty"):
        spear.evaluate(a[:0], a[:0])
    with pytest.raises(InputError, match="mask"):
        M.get_metric("pointing_game")().evaluate(a, np.ones((3, 8, 7), bool))
    with pytest.raises(InputError, match="boolean"):
        M.get_metric("pointing_game")().evaluate(a, a)


def test_explanations_and_tensors_are_accepted(tiny_model, tiny_x):
    import tensorflow as tf

    exp = cv.explain("saliency", tiny_model, tiny_x)
    m = M.get_metric("sparseness")()
    np.testing.assert_array_equal(m.evaluate(exp), m.evaluate(exp.heatmap))
    np.testing.assert_array_equal(m.evaluate(tf.constant(exp.heatmap)), m.evaluate(exp.heatmap))


def test_evaluate_shortcut_and_make_metric():
    h = np.random.default_rng(1).random((4, 6, 6))
    np.testing.assert_array_equal(M.evaluate("topk_iou", h, h[::-1], params={"k": 3}),
                                  M.get_metric("topk_iou")(k=3).evaluate(h, h[::-1]))
    inst = M.make_metric("entropy")
    assert M.make_metric(inst) is inst
    with pytest.raises(InputError):
        M.make_metric(inst, eps=1)
    assert inst.info()["metric"] == "entropy" and inst.info()["higher_is_better"] is False


def test_long_frame():
    df = M.long_frame({"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0])}, method="saliency", model="m")
    assert list(df.columns) == ["method", "model", "image", "metric", "value"]
    assert df.value.tolist() == [1.0, 2.0, 3.0, 4.0] and df.image.tolist() == [0, 1, 0, 1]


def test_explainer_factory_forms(tiny_model):
    spec = cv.as_spec(tiny_model)
    for form in ("saliency", cv.get_method("saliency"), cv.get_method("saliency")(spec),
                 lambda s: cv.get_method("saliency")(s)):
        ex = M.explainer_factory(form)(spec)
        assert ex.name == "saliency" and ex.spec is spec
    inst = cv.get_method("saliency")(spec, signed=True)
    other = M.clone_with_weights(spec)
    rebuilt = M.explainer_factory(inst)(other)
    assert rebuilt is not inst and rebuilt.spec is other and rebuilt.signed
    with pytest.raises(InputError):
        M.explainer_factory(3)
    with pytest.raises(InputError, match="unknown method"):
        M.explainer_factory("salincy")
