"""Shared settings of the sanity and evaluation suites (fast method parameters, data)."""

from __future__ import annotations

import functools

import numpy as np

from cnnvis_eval.data.synthetic import make_synthetic

# fast settings for repeated use on the mini models (the methods' defaults are the papers')
SUITE_PARAMS: dict[str, dict] = {
    "lime": {"num_samples": 200},
    "rise": {"n_masks": 500},
    "smoothgrad": {"n": 8},
    "vargrad": {"n": 8},
    "integrated_gradients": {"steps": 16},
    "occlusion": {"window": 8, "stride": 4},
}

EVAL_SEED = 4242  # never used to train the mini models


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
