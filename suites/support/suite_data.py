"""Shared settings of the sanity and evaluation suites (fast method parameters, data)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from cnnvis_eval.data.synthetic import make_synthetic
from cnnvis_eval.evaluation import GRID_PARAMS
from suites.support.models import mini_spec
from suites.support.shared_cache import cached_array

# fast settings for repeated use on the mini models (the methods' defaults are the papers'):
# the comparison run's, except RISE with more masks (its maps are noisy at 250 on 64 px) and
# a fixed occlusion window for the 64 px minis; the suites' thresholds were measured with these
SUITE_PARAMS: dict[str, dict] = {
    **GRID_PARAMS,
    "rise": {"n_masks": 500},
    "occlusion": {"window": 8, "stride": 4},
}

#: methods kept out of the default runs of the suites that explain many images with every
#: method on every mini (localization, faithfulness, agreement, randomization, the methods
#: benchmark): the second slice of issue 19.  Measured with the suites' parameters on 2 busy
#: cores, each added 25-55 s to the localization suite alone (16 images x 5 minis, twice with
#: the shortcut models), beyond the default suite's budget; XRAI segments each image six times
#: (Felzenszwalb at 224 px, PAIR's), ~1.3 s per image.  KernelSHAP, Sobol and HSIC (issue 19) are
#: perturbation methods like LIME (200, 528 and 250 model inputs per image).  They run under
#: ``-m slow``; by default they are covered by suites/unit/test_path_ig.py, test_shap_deeplift.py,
#: test_kernel_shap.py, test_sobol_hsic.py and the invariance suite.
SLOW_METHODS = frozenset({"guided_ig", "blur_ig", "xrai", "square_grad", "gradient_shap", "deeplift",
                          "kernel_shap", "sobol", "hsic"})
#: of those, the ones too slow even for the invariance suite's tiny models (per-image segmentation)
SEGMENTING = frozenset({"xrai"})


def method_cases(methods, slow=SLOW_METHODS) -> list:
    """pytest params of ``methods``, those in ``slow`` marked ``slow``."""
    import pytest

    return [pytest.param(m, marks=pytest.mark.slow) if m in slow else m for m in methods]


EVAL_SEED = 4242  # never used to train the mini models
EVAL_IMAGES = 16  # synthetic images per mini model in the evaluation suites


@functools.lru_cache(maxsize=None)
def benchmark(n: int = 16, shortcut: bool = False, split: str = "train"):
    """The synthetic evaluation images (64 px) with object (and marker) masks."""
    return make_synthetic(n, 64, seed=EVAL_SEED + (1 if shortcut else 0), shortcut=shortcut, split=split)


def params(method: str) -> dict:
    return dict(SUITE_PARAMS.get(method, {}))


def final_similarity(curve, metric: str = "spearman_abs") -> np.ndarray:
    """Per-image similarity at the last step of a randomization curve frame."""
    c = curve[curve["metric"] == metric]
    return c[c["step"] == c["step"].max()].sort_values("image")["value"].to_numpy()


_EXPLAINED: dict = {}


class Explained(NamedTuple):
    """Heatmaps of one method on one mini model over the evaluation images."""

    heatmap: np.ndarray  # float32 (N, H, W)
    spec: object  # ModelSpec of the explained model
    data: object  # SyntheticSet (images, labels, masks, marker_masks)
    x: np.ndarray  # preprocessed images (N, H, W, 3)


def explained(method: str, model: str, n: int = 16, marker: bool = False) -> Explained:
    """``method``'s heatmaps on mini ``model`` for the first ``n`` evaluation images (with
    the shortcut marker if ``marker``), explaining each image's true class; computed once
    per session (localization, faithfulness and the shortcut test share them).

    ``method`` is a registered method name or ``"control:<name>"`` for a negative control
    of :data:`cnnvis_eval.metrics.CONTROLS`.  Raises UnsupportedArchitectureError where the
    method does not apply (CAM without a GAP head).
    """
    import cnnvis_eval as cv

    key = (method, model, n, marker)
    if key not in _EXPLAINED:
        spec = mini_spec(model)
        syn = benchmark(n, shortcut=marker)
        x = spec.preprocess(syn.images)
        target = cv.ClassTarget(syn.labels)

        def compute():
            if method.startswith("control:"):
                from cnnvis_eval.metrics import CONTROLS

                return CONTROLS[method.split(":", 1)[1]](spec).explain(x, target=target).heatmap
            return cv.explain(method, spec, x, target=target, progress=False, **params(method)).heatmap

        # shared with the other xdist workers of this session (suites.support.shared_cache)
        heat = cached_array(("explained", method, model, n, marker, sorted(params(method).items())), compute)
        _EXPLAINED[key] = Explained(heat, spec, syn, x)
    return _EXPLAINED[key]
