"""Every registered method explains the grid's intermediate neurons (the study's "mid" and
"high": the most activated channel of two intermediate layers) or says it does not apply.

The default run explains these neurons with every method; a method whose code path only
works for a class logit shows up there as an error cell, not as a failed test (FullGrad did:
a KeyError on every model).  One image of mini_mobilenet (a residual network with ReLU6 and
depthwise convolutions), the grid's parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import TargetError, UnsupportedArchitectureError, UnsupportedLayerError
from cnnvis_eval.evaluation import method_params
from cnnvis_eval.evaluation.inputs import neuron_targets
from suites.support.models import mini_spec
from suites.support.suite_data import benchmark


@pytest.mark.parametrize("method", cv.list_methods())
def test_every_method_explains_the_intermediate_neurons_or_says_it_does_not_apply(method):
    spec = mini_spec("mini_mobilenet")
    x = spec.preprocess(benchmark(1).images)
    try:
        explainer = cv.get_method(method)(spec, **method_params(method, spec))
    except (UnsupportedArchitectureError, UnsupportedLayerError):
        pytest.skip(f"{method} does not apply to mini_mobilenet")
    targets = neuron_targets(spec)
    for kind in ("mid", "high"):
        try:
            exp = explainer.explain(x, targets[kind])
        except (UnsupportedArchitectureError, UnsupportedLayerError, TargetError) as err:
            # what the grid records as "n/a": one clear line naming the method
            assert len(str(err).splitlines()) == 1 and method in str(err), err
            continue
        assert exp.heatmap.shape == (1,) + tuple(spec.input_shape[:2]), (kind, exp.heatmap.shape)
        assert np.isfinite(exp.heatmap).all(), kind
        assert np.ptp(exp.heatmap) > 0, f"{method} gives a constant map for the {kind} neuron"
