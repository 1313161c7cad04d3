"""Sanity checks for a user's model: verdicts relative to controls, assertion functions, pytest plugin.

- :mod:`~cnnvis_eval.testing.checks`: ``run_check(ctx, check, method, variant) -> Verdict``
  for randomization, class sensitivity, faithfulness, invariance, stability, conservation,
  localization and cost, on a :class:`CheckContext` (model, images, masks);
- :mod:`~cnnvis_eval.testing.asserts`: the same checks as plain assertions for hand-written tests;
- :mod:`~cnnvis_eval.testing.inputs`: users' image folders / npz / arrays, masks, preprocessing;
- :mod:`~cnnvis_eval.testing.plugin`: the pytest plugin (``pytest --cnnvis-model ...``);
- :mod:`~cnnvis_eval.testing.thresholds`, :mod:`~cnnvis_eval.testing.known`: every threshold
  and every predicted failure, with sources.
"""

from .asserts import (
    assert_class_sensitive,
    assert_faithful,
    assert_invariant_to_batch,
    assert_randomization_sensitive,
)
from .checks import CHECKS, run_check
from .context import CheckContext
from .thresholds import THRESHOLDS, Threshold
from .verdict import STATUSES, Verdict, verdict_frame

__all__ = [
    "CHECKS",
    "CheckContext",
    "STATUSES",
    "THRESHOLDS",
    "Threshold",
    "Verdict",
    "assert_class_sensitive",
    "assert_faithful",
    "assert_invariant_to_batch",
    "assert_randomization_sensitive",
    "run_check",
    "verdict_frame",
]
