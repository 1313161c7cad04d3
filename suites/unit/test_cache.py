"""The per-model cache (cnnvis_eval.cache): explainers and compiled functions per model."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.cache import ModelCache, default_cache
from suites.support import perturb_models as pm


def _spec(seed=0):
    model, _, _ = pm.linear_model(size=6, channels=1, classes=2, seed=seed)
    return cv.ModelSpec(name=f"linear{seed}", model=model, input_shape=(6, 6, 1))


def test_explain_reuses_one_explainer_per_model_method_and_params():
    spec = _spec()
    cache = ModelCache()
    made = []

    def build():
        made.append(object())
        return made[-1]

    a = cache.explainer(spec, "saliency", {"signed": True}, build)
    assert cache.explainer(spec, "saliency", {"signed": True}, build) is a
    assert cache.explainer(spec, "saliency", {"signed": False}, build) is not a
    assert len(made) == 2 and spec in cache and len(cache) == 1


def test_drop_and_clear_release_a_models_entries():
    s1, s2 = _spec(0), _spec(1)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 1))
    e1 = cv.explain("saliency", s1, x, 0)
    cv.explain("saliency", s2, x, 0)
    assert s1 in default_cache and s2 in default_cache
    fns = default_cache.functions(s1)
    assert fns  # the explainer's compiled forward/gradient functions
    default_cache.drop(s1)
    assert s1 not in default_cache and s2 in default_cache
    assert not default_cache.functions(s1)  # a fresh, empty entry
    again = cv.explain("saliency", s1, x, 0)  # rebuilt, same result
    np.testing.assert_array_equal(again.heatmap, e1.heatmap)
    default_cache.drop(s2.model)  # by the Keras model
    assert s2 not in default_cache
    cache = ModelCache()
    cache.functions(s1)["k"] = 1
    cache.clear()
    assert s1 not in cache and len(cache) == 0
    default_cache.drop(s1)


def test_cache_does_not_keep_a_model_alive():
    spec = _spec(2)
    cv.explain("saliency", spec, np.zeros((1, 6, 6, 1)), 0)
    assert spec in default_cache
    ref = weakref.ref(spec)
    del spec
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("method", ["occlusion", "rise", "lime"])
def test_cached_explainer_serves_two_threads(method):
    import threading

    model = pm.region_model(24, (4, 20, 4, 20))
    spec = cv.ModelSpec(name="region", model=model, input_shape=(24, 24, 3))
    x = np.concatenate([pm.textured_image(24, seed=0), pm.textured_image(24, seed=1)])
    params = {"occlusion": {"window": 4}, "rise": {"n_masks": 40, "grid_size": 3},
              "lime": {"num_samples": 40, "segmentation": "slic"}}[method]
    alone = [cv.get_method(method)(spec, progress=False, **params).explain(x[i:i + 1], i)
             for i in range(2)]
    out: dict = {}
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        try:
            out[i] = cv.explain(method, spec, x[i:i + 1], i, progress=False, **params)
        except Exception as err:  # re-raised in the test's thread below
            out[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in out.values():
        if isinstance(res, Exception):
            raise res
    for i in range(2):
        np.testing.assert_allclose(out[i].heatmap, alone[i].heatmap, rtol=1e-6, atol=1e-6)
    default_cache.drop(spec)
