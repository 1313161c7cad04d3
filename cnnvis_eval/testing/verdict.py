"""The verdict of one check: what was measured, against what, and relative to which controls.

A :class:`Verdict` is one (model, method, check) cell of the scorecard; :func:`verdict_frame`
turns a list of them into long-frame rows (:func:`cnnvis_eval.frame.rows`) that a report
can pivot like every other table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .. import frame

STATUSES = ("pass", "fail", "inconclusive", "n/a")


@dataclass
class Verdict:
    """One check of one method on one model.

    Attributes
    ----------
    model, method : str
    check : str
        ``"<check>.<variant>"``, e.g. ``"randomization.cascading_top"``.
    status : "pass", "fail", "inconclusive" or "n/a"
    value : float
        The measured value (NaN when nothing could be measured).
    threshold : str
        The threshold as text (``"< 0.9"``) with its source in :data:`THRESHOLDS`.
    controls : dict
        Control name -> its value on the same model and images (``edge_sobel``, ``saliency``,
        ``random_order``, ...).
    reason : str
        Why (always set for ``inconclusive`` and ``n/a``).
    known_failure : str or None
        The citation when the literature predicts this failure.
    """

    model: str
    method: str
    check: str
    status: str
    value: float = math.nan
    threshold: str = ""
    controls: dict = field(default_factory=dict)
    reason: str = ""
    known_failure: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        self.value = float(self.value)

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def message(self) -> str:
        """One line: status, value, threshold, controls, reason and citation."""
        ctl = ", ".join(f"{k}={v:.4g}" for k, v in self.controls.items())
        parts = [f"{self.method} on {self.model}: {self.check} {self.status}"]
        if not math.isnan(self.value):
            parts.append(f"measured {self.value:.4g} (threshold {self.threshold})")
        if ctl:
            parts.append(f"controls: {ctl}")
        if self.reason:
            parts.append(self.reason)
        if self.known_failure:
            parts.append(f"known failure: {self.known_failure}")
        return "; ".join(parts)


def verdict_frame(verdicts) -> pd.DataFrame:
    """Long-frame rows of verdicts: one row for the value (``metric`` = the check) and one
    per control (``metric`` = ``"<check>:control:<name>"``).

    Extra columns, before the long-frame ones: ``status``, ``threshold``, ``reason``,
    ``known_failure``.  ``image`` is ``"all"`` (a verdict summarizes the images), ``neuron``
    is ``"logit"``.
    """
    parts = []
    for v in verdicts:
        labels = dict(status=v.status, threshold=v.threshold, reason=v.reason,
                      known_failure=v.known_failure or "", method=v.method, model=v.model, neuron="logit")
        parts.append(frame.rows(v.check, [v.value], image="all", **labels))
        for name, val in v.controls.items():
            parts.append(frame.rows(f"{v.check}:control:{name}", [val], image="all", **labels))
    if not parts:
        return pd.DataFrame(columns=["status", "threshold", "reason", "known_failure", *frame.COLUMNS])
    return pd.concat(parts, ignore_index=True)


__all__ = ["STATUSES", "Verdict", "verdict_frame"]
