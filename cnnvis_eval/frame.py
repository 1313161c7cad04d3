"""The long results frame: one row per (method, model, image, neuron, metric) with ``value``.

Every table and figure of a report is a pivot of this frame (docs/architecture.md).  It is
built in one place, :func:`rows`, by the comparison grid (``evaluation/store.py``), by the
metric helper :func:`cnnvis_eval.metrics.long_frame`, and by the test suite's ``record``
fixture; this module sits below all of them (it imports neither metrics nor evaluation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("method", "model", "image", "neuron", "metric", "value")
#: ``method`` of the rows of a model-blind control map (``"control:edge_sobel"``, ...): the grid
#: scores the controls beside the methods; the report and the scorecard read them as controls
CONTROL_PREFIX = "control:"


def rows(metric: str, values, image=None, **labels) -> pd.DataFrame:
    """Rows of the long frame for one metric: one row per value.

    Parameters
    ----------
    metric : str
        The ``metric`` column.
    values : array-like, (N,) (any shape; flattened)
        The ``value`` column, as float64.
    image : sequence of N ids, a scalar, or None
        The ``image`` column: per-row ids, one id for every row, or (None) ``0 .. N-1``.
    **labels
        The other columns (``method=``, ``model=``, ``neuron=``, or columns of one's own
        such as ``suite=``): a scalar for every row, or a sequence of N values.

    Returns
    -------
    DataFrame
        Columns: the labels that are not long-frame columns first (in the order given),
        then the long-frame columns present, in the order of :data:`COLUMNS`.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if image is None:
        image = np.arange(len(values))
    cols = {k: v if v is None or np.isscalar(v) else list(v) for k, v in dict(labels, image=image).items()}
    cols.update(metric=metric, value=values)
    order = [k for k in labels if k not in COLUMNS] + [c for c in COLUMNS if c in cols]
    return pd.DataFrame({k: cols[k] for k in order})


__all__ = ["COLUMNS", "CONTROL_PREFIX", "rows"]
