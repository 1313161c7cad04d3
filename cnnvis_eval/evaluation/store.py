"""The files of one run (:class:`RunStore`), the long-frame rows they hold, and the versions
a run records.

A run folder holds::

    config.json                      the configuration and the versions (:func:`versions`)
    images/<model>.npz               the images one model saw (ids, masks, class names)
    heatmaps/<model>/<method>/<neuron>.npz      a cell: heatmaps, indices, scores, timings
    heatmaps/<model>/<method>/<neuron>.na.txt   a cell that does not apply: its reason
    rows/<stage>/<parts>.parquet     each stage's rows (long-frame rows, curves, matrices)
    cells.parquet, results.parquet (+ .csv), curves.parquet, agreement.parquet, reference.parquet

Every write is atomic (a temporary file, then a rename), so an interrupted run leaves no
half-written file and resumes from what is stored.  Long-frame rows are built by
:func:`cnnvis_eval.frame.rows`, the one builder the metrics and the test suite use too.
"""

from __future__ import annotations

import os
import platform
import secrets
from pathlib import Path

import numpy as np
import pandas as pd


class RunStore:
    """Files of one run under ``root``; every write is atomic (tmp file + rename).

    Parameters
    ----------
    root : str or Path
        The run folder (created).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def heatmap_path(self, model: str, method: str, neuron: str) -> Path:
        """Where the cell (model, method, neuron) is stored (``.npz``)."""
        return self.root / "heatmaps" / model / method / f"{neuron}.npz"

    @staticmethod
    def na_path(cell_path: Path) -> Path:
        """Where a cell that does not apply keeps its reason (``<neuron>.na.txt``)."""
        return cell_path.with_suffix(".na.txt")

    def save_text(self, path: Path, text: str):
        self._atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def rows_path(self, stage: str, *parts: str) -> Path:
        """Where a stage keeps one part of its rows: ``rows/<stage>/<part>__<part>.parquet``."""
        return self.root / "rows" / stage / ("__".join(parts) + ".parquet")

    @staticmethod
    def _atomic(path: Path, write):
        """``write(tmp)`` into a temporary file next to ``path``, then rename it to ``path``.

        The temporary name is unique per process and call (``.<name>.<pid>.<random>.tmp``),
        so two writers of one path never share it; a failed write leaves no temporary file.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            write(tmp)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def save_cell(self, path: Path, **arrays):
        """Store named arrays as a compressed ``.npz``."""
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        self._atomic(path, write)

    def load_cell(self, path: Path) -> dict:
        """The arrays of a stored ``.npz`` (no pickled objects)."""
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_rows(self, path: Path, df: pd.DataFrame):
        self._atomic(path, lambda tmp: df.to_parquet(tmp, index=False))

    def load_rows(self, stage: str) -> pd.DataFrame:
        """All rows one stage stored (empty frame if none)."""
        files = sorted((self.root / "rows" / stage).glob("*.parquet"))
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def versions() -> dict:
    """The versions a run records in its ``config.json`` (library, TensorFlow, Keras, ...)."""
    import keras
    import tensorflow as tf

    import cnnvis_eval

    return {"cnnvis_eval": cnnvis_eval.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


__all__ = ["RunStore", "versions"]
