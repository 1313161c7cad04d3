"""The remedies' section of a report (issue 17, section 4), from their long frame
(``dataset, remedy, stage, lam, metric, value``, as :func:`cnnvis_eval.remedy.evaluate`
returns and ``cnnvis-eval remedy`` writes to ``remedies.parquet``):

- :func:`results_table` — one row per (dataset, remedy), one column per metric;
- :func:`sweep_table` — the lambda curves;
- :func:`section` — both as HTML, with the before/after CAM grids (PNG files, embedded).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import pandas as pd

from .html import data_uri

METRICS = ("clean_accuracy", "moved_accuracy", "swapped_accuracy", "absent_accuracy", "cam_mass",
           "irrelevant_filters", "train_seconds")
#: the grid PNGs ``cnnvis-eval remedy`` writes next to ``remedies.parquet``
GRID_GLOB = "remedies_cams*.png"


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The long frame as one row per (dataset, remedy) — the shortcut model first, as remedy
    ``"(before)"`` — and one column per metric."""
    before = frame[frame["stage"] == "before"].drop_duplicates(["dataset", "metric"]).assign(remedy="(before)")
    after = frame[frame["stage"] == "after"]
    wide = pd.concat([before, after]).pivot_table(index=["dataset", "remedy"], columns="metric", values="value",
                                                  sort=False)
    return wide[[m for m in METRICS if m in wide.columns]]


def sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The lambda curves: one row per (dataset, remedy, lam) of the ``"sweep"`` rows, one
    column per metric (empty when no sweep ran)."""
    rows = frame[frame["stage"] == "sweep"]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index=["dataset", "remedy", "lam"], columns="metric", values="value", sort=False)


def section(frame: pd.DataFrame, grids: Sequence[str | Path] = ()) -> str:
    """An HTML section (``<section id="remedies">``): the table of :func:`results_table`, the
    lambda curves of :func:`sweep_table` if any, and the PNG files ``grids`` (before/after CAM
    grids) embedded as data URIs."""
    table = results_table(frame).round(3).to_html(border=0, classes="remedies")
    curves = sweep_table(frame)
    if not curves.empty:
        table += ("\n<h3>Lambda curves (validation images with a swapped artefact)</h3>\n"
                  + curves.round(3).to_html(border=0, classes="remedy-sweep"))
    if grids:
        table += ("\n<h3>Class maps before and after</h3>\n<p class=\"desc\">CAM of the true class on test images "
                  "whose artefact codes another class; white outline: the artefact.</p>\n")
        table += "".join(f"<figure><img src=\"{data_uri(p)}\" alt=\"CAM before and after, {html.escape(Path(p).stem)}\">"
                         f"<figcaption>{html.escape(Path(p).name)}</figcaption></figure>\n" for p in grids)
    sets = ", ".join(html.escape(d) for d in frame["dataset"].unique())
    return ("<section id=\"remedies\"><h2>Irrelevant features: remedies</h2>\n"
            f"<p>Data sets: {sets}. Row <code>(before)</code>: the shortcut model; the others: a copy retrained "
            "with the remedy, and the upper bound (trained where the artefact tells nothing). Accuracies on the "
            "test split as in training (clean), with the artefact moved, swapped to another class, and absent; "
            "CAM mass: share of the class map on the artefact.</p>\n" + table + "\n</section>\n")


def folder_section(root: str | Path) -> str:
    """:func:`section` of a folder's ``remedies.parquet`` and its ``remedies_cams*.png``
    grids; ``""`` when the folder has no ``remedies.parquet``."""
    root = Path(root)
    path = root / "remedies.parquet"
    if not path.is_file():
        return ""
    return section(pd.read_parquet(path), sorted(root.glob(GRID_GLOB)))


__all__ = ["GRID_GLOB", "METRICS", "folder_section", "results_table", "section", "sweep_table"]
