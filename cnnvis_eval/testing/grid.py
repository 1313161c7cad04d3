"""Verdicts a grid run's numbers can decide honestly (``cnnvis-eval run``'s ``results.parquet``).

The grid measures scores, not checks: most checks need controls on the same model and
images that a grid run does not compute.  :func:`grid_verdicts` decides only these:

- ``randomization.cascading_all``: ``randomization_similarity`` (the grid's last cascading
  step randomizes every layer group), mean over images, logit neuron, against
  :data:`THRESHOLDS` ``["randomization.cascading_all"]``.  The model-blind controls of
  :data:`cnnvis_eval.metrics.CONTROLS` and the plain gradient (``saliency``) are shown as
  controls when the run holds their values; a model-blind control that changed under
  randomization makes the verdict ``inconclusive``, as in :func:`.checks.check_randomization`.
- ``localization.pointing_game`` / ``localization.relevance_mass``: only as a margin over the
  ``random`` control's score when the run holds it; else ``inconclusive``.
- ``cost``: ``cost_ratio`` (already a ratio to one forward+backward pass of the same model)
  against the budget ``THRESHOLDS["cost"]``.
- ``faithfulness.deletion`` / ``faithfulness.insertion``: always ``inconclusive`` when measured:
  the check's value is the gain over random pixel orders per *mean* |logit| of the images;
  the grid's ``deletion_gain`` / ``insertion_gain`` are gains per image's own |logit|
  (averaged), a different estimator that the check's threshold was not set for.

The grid's model-blind control rows (``method="control:<name>"``, see
:data:`cnnvis_eval.evaluation.stages.CONTROLS`) are read as the controls of these names.

Nothing else is derived.  :meth:`GridRun.collect` writes the verdicts to ``verdicts.parquet``.
"""

from __future__ import annotations

import math

import pandas as pd

from ..frame import CONTROL_PREFIX
from .known import known_failure
from .thresholds import THRESHOLDS
from .verdict import Verdict

MODEL_BLIND = ("edge_sobel", "constant")
"""Control explainers that ignore the model (:data:`cnnvis_eval.metrics.CONTROLS`)."""
CONTROL_METHODS = (*MODEL_BLIND, "random")
REFERENCE = "saliency"
_NOT_IN_GRID = "run `cnnvis-eval check` for this verdict"


def _means(results: pd.DataFrame, metric: str) -> pd.Series:
    """Mean ``value`` of ``metric`` (logit neuron) per (model, method)."""
    df = results[(results["metric"] == metric) & (results["neuron"] == "logit")]
    method = df["method"].astype(str).str.removeprefix(CONTROL_PREFIX)  # the grid's control rows
    return pd.to_numeric(df["value"], errors="coerce").groupby([df["model"], method]).mean()


def _subjects(means: pd.Series):
    """(model, method, value) of the methods that are not controls, in order."""
    for (model, method), value in means.items():
        if method not in CONTROL_METHODS:
            yield str(model), str(method), float(value)


def _decide(model, method, key, value, controls, reason="") -> Verdict:
    thr = THRESHOLDS[key]
    status = "inconclusive" if math.isnan(value) else ("pass" if thr.passes(value) else "fail")
    check, _, variant = key.partition(".")
    v = Verdict(model, method, key, status, value, str(thr), controls,
                reason or ("no finite value" if status == "inconclusive" else ""))
    if status == "fail":
        v.known_failure = known_failure(check, variant or None, method)
    return v


def _randomization(results: pd.DataFrame) -> list[Verdict]:
    key = "randomization.cascading_all"
    means = _means(results, "randomization_similarity")
    out = []
    for model, method, value in _subjects(means):
        controls = {c: float(means[model, c]) for c in (*MODEL_BLIND, REFERENCE)
                    if c != method and (model, c) in means.index}
        blind = {c: v for c, v in controls.items() if c in MODEL_BLIND}
        moved = [c for c, v in blind.items() if not THRESHOLDS["randomization.control"].passes(v)]
        if moved:
            out.append(Verdict(model, method, key, "inconclusive", value, str(THRESHOLDS[key]), controls,
                               f"the model-blind control {', '.join(moved)} changed under randomization"))
            continue
        reason = "" if blind else "full cascading randomization of the grid; no model-blind control in this run"
        out.append(_decide(model, method, key, value, controls, reason))
    return out


def _localization(results: pd.DataFrame) -> list[Verdict]:
    out = []
    for variant, metric in (("pointing_game", "pointing_game"), ("relevance_mass", "relevance_mass_accuracy")):
        key = f"localization.{variant}"
        means = _means(results, metric)
        for model, method, value in _subjects(means):
            if (model, "random") not in means.index:
                out.append(Verdict(model, method, key, "inconclusive", math.nan, str(THRESHOLDS[key]), {},
                                   f"{metric} {value:.4g} on the synthetic masks, but the run has no random "
                                   f"explainer (chance) to compare with; {_NOT_IN_GRID}"))
                continue
            chance = float(means[model, "random"])
            out.append(_decide(model, method, key, value - chance, {"random": chance},
                               "value = score - random explainer's score"))
    return out


def _faithfulness(results: pd.DataFrame) -> list[Verdict]:
    out = []
    for variant in ("deletion", "insertion"):
        key = f"faithfulness.{variant}"
        for model, method, value in _subjects(_means(results, f"{variant}_gain")):
            out.append(Verdict(model, method, key, "inconclusive", math.nan, str(THRESHOLDS[key]), {},
                               f"{variant} gain {value:.4g} per image's |logit|; the check's gain is per mean "
                               f"|logit| of the images, the estimator its threshold was set for; {_NOT_IN_GRID}"))
    return out


def _cost(results: pd.DataFrame) -> list[Verdict]:
    return [_decide(model, method, "cost", value, {}, "seconds per image / one forward+backward pass")
            for model, method, value in _subjects(_means(results, "cost_ratio"))]


def grid_verdicts(results: pd.DataFrame) -> list[Verdict]:
    """The verdicts a grid run's long results frame decides (see the module docstring).

    Parameters
    ----------
    results : DataFrame
        The long frame (``method, model, image, neuron, metric, value``) of a grid run.

    Returns
    -------
    list of Verdict
        In check order (randomization, localization, faithfulness, cost), then model and
        method; empty when the frame holds none of those metrics.
    """
    if results.empty:
        return []
    return [*_randomization(results), *_localization(results), *_faithfulness(results), *_cost(results)]


__all__ = ["CONTROL_METHODS", "MODEL_BLIND", "REFERENCE", "grid_verdicts"]
