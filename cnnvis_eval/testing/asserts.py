"""The checks as plain assertions for hand-written tests.

Each function runs one check of :mod:`cnnvis_eval.testing.checks` (with its controls, on the
same model and images) and raises ``AssertionError`` unless the verdict is ``pass``; the
message holds the measured value, the threshold, the controls' values, the reason and, for a
failure the literature predicts, its citation.  On success the :class:`Verdict` is returned::

    from cnnvis_eval.testing import assert_randomization_sensitive
    assert_randomization_sensitive("grad_cam", model, x)          # x: (N, H, W, C) preprocessed
"""

from __future__ import annotations

from .checks import run_check
from .context import CheckContext
from .verdict import Verdict


def _assert(check: str, variant, method: str, model, x, params: dict | None, seed: int, masks=None) -> Verdict:
    ctx = model if isinstance(model, CheckContext) else CheckContext(
        model, x, masks=masks, params={method: dict(params or {})}, seed=seed)
    v = run_check(ctx, check, method, variant)
    if v.status != "pass":
        raise AssertionError(v.message())
    return v


def assert_randomization_sensitive(method: str, model, x, *, variant: str = "cascading_all",
                                   params: dict | None = None, seed: int = 0) -> Verdict:
    """The map changes when the model's weights are re-initialized (Adebayo et al. 2018).

    Parameters
    ----------
    method : str
        A registered method name.
    model : ModelSpec, keras.Model or CheckContext (then ``x`` is ignored)
    x : array (N, H, W, C)
        Preprocessed images.
    variant : "cascading_top", "cascading_half", "cascading_all" (default) or "independent"
    params : dict, optional
        The method's constructor parameters.
    seed : int
    """
    return _assert("randomization", variant, method, model, x, params, seed)


def assert_class_sensitive(method: str, model, x, *, params: dict | None = None, seed: int = 0) -> Verdict:
    """The map of the top class differs from that of the runner-up class (Sixt et al. 2020);
    fails as ``inconclusive`` when no image has a runner-up with a positive logit."""
    return _assert("class_sensitivity", None, method, model, x, params, seed)


def assert_faithful(method: str, model, x, *, variant: str = "road", params: dict | None = None,
                    seed: int = 0) -> Verdict:
    """Removing (``deletion``, ``road``) or revealing (``insertion``) pixels in the map's order
    changes the score more than random orders do."""
    return _assert("faithfulness", variant, method, model, x, params, seed)


def assert_invariant_to_batch(method: str, model, x, *, params: dict | None = None, seed: int = 0) -> Verdict:
    """Explaining a batch gives what explaining each image alone gives."""
    return _assert("invariance", "batch", method, model, x, params, seed)


__all__ = ["assert_class_sensitive", "assert_faithful", "assert_invariant_to_batch", "assert_randomization_sensitive"]
