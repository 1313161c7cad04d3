"""Score tables: every table is a pivot of the one long results DataFrame.

The long frame has one row per measurement with columns ``method, model, image, neuron,
metric, value`` (suite runs add ``suite, test``).  :func:`pivot` turns one metric into a
method x model table; :func:`score_tables` builds the report's set of tables (the objective
counterpart of the study's table of hits) and :func:`totals` the per-method totals (a
rank-based summary in which ties do not count as wins, :func:`rank_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import InputError
from ..frame import COLUMNS, CONTROL_PREFIX


#: Direction of the report's columns that are not registered metrics (the grid computes
#: them itself, so there is no Metric class to ask): the similarity after full model
#: randomization (lower: the map depends on the weights, the direction of the
#: ``model_randomization`` metric), the agreement with the other methods (no "best"), and
#: the cost ratio (lower is cheaper).  Every other column reads ``higher_is_better`` from
#: its metric class.
NON_METRIC_DIRECTION: dict[str, bool | None] = {
    "randomization_similarity": False,
    "agreement": None,
    "cost_ratio": False,
}


def score_direction(metric: str) -> bool | None:
    """True if higher values of ``metric`` are better, False if lower, None if neither.

    Registered metrics answer with their class's ``higher_is_better``; the report's
    other columns are listed in :data:`NON_METRIC_DIRECTION`.
    """
    if metric in NON_METRIC_DIRECTION:
        return NON_METRIC_DIRECTION[metric]
    from ..metrics import get_metric

    return get_metric(metric).higher_is_better


@dataclass(frozen=True)
class Score:
    """One score table: which metric, how it is aggregated; its direction comes from the
    metric (:func:`score_direction`)."""

    key: str
    title: str
    metric: str
    neuron: str | None = "logit"  # restrict to this neuron kind (None: all)
    agg: str = "mean"
    description: str = ""

    @property
    def higher_is_better(self) -> bool | None:
        """Which direction is better (None: no "best", e.g. agreement)."""
        return score_direction(self.metric)


SCORES: tuple[Score, ...] = (
    Score("pointing_game", "Localization: pointing-game hit rate", "pointing_game",
          description="fraction of synthetic images whose heatmap maximum lies on the target object"),
    Score("relevance_mass", "Localization: relevance mass on the object", "relevance_mass_accuracy",
          description="share of positive relevance that falls inside the ground-truth mask"),
    Score("class_contrast", "Class contrast: relevance on the explained object vs the others (scenes)",
          "class_contrast_mass",
          description="benchmark v2 scenes of 2-3 objects of different classes: (d_target - d_others) / "
                      "(d_target + d_others), d the mean positive relevance per pixel on the object of the "
                      "explained class and on the other objects; 1 = only the target, 0 = chance (the "
                      "control:edge_sobel and control:random rows: model-blind maps), -1 = only the others"),
    Score("contrast_pointing", "Class contrast: pointing game among the objects (scenes)",
          "contrast_pointing_game",
          description="whether the map's maximum over the objects' pixels lies on the object of the explained "
                      "class (chance: its share of the objects' area, about 0.4)"),
    Score("part_correctness", "Part correctness: map mass per part vs counterfactual importance (birds)",
          "part_importance_correlation",
          description="benchmark v2 part-based birds: Spearman between the map's mean relevance per part and "
                      "the drop of the explained logit when the part is removed (FunnyBirds' protocol); 0 = "
                      "chance (the control rows), 1 = the parts ranked as the model uses them"),
    Score("deletion", "Faithfulness: deletion gain over random orders", "deletion_gain",
          description="zero-fill deletion, most relevant pixels first: (mean AUC of 3 random orders - AUC of the "
                      "map's order) / |clean logit|, per image — 0 = no better than random, higher is better; "
                      "comparable across models (raw logit areas are not)"),
    Score("insertion", "Faithfulness: insertion gain over random orders", "insertion_gain",
          description="insertion from a blurred image, most relevant pixels first: (AUC of the map's order - mean "
                      "AUC of 3 random orders) / |clean logit|, per image — 0 = no better than random"),
    Score("deletion_auc", "Faithfulness: deletion AUC (raw)", "deletion_auc",
          description="area under the target score while the most relevant pixels are removed (lower is better)"),
    Score("insertion_auc", "Faithfulness: insertion AUC (raw)", "insertion_auc",
          description="area under the target score while the most relevant pixels are revealed (higher is better)"),
    Score("randomization", "Randomization: similarity after full cascading randomization",
          "randomization_similarity",
          description="Spearman rank correlation (absolute maps) between the heatmap of the trained model "
                      "and of the fully re-initialized model (lower = more sensitive to the model = better); "
                      "the z+ presets (deep_taylor, deep_taylor_bounded, lrp_alpha1beta0) start from the signed "
                      "logit here, since a negative logit would give an all-zero map"),
    Score("agreement", "Agreement with the other methods", "agreement", neuron=None,
          description="mean Spearman rank correlation with every other method's heatmap of the same image and neuron"),
    Score("cost", "Cost (ratio to one forward+backward pass)", "cost_ratio", neuron=None,
          description="seconds per image divided by a plain forward+backward pass of the same model in the same run"),
)


def check_long(results: pd.DataFrame) -> pd.DataFrame:
    """Validate the long results frame (required columns, numeric values)."""
    missing = [c for c in COLUMNS if c not in results.columns]
    if missing:
        raise InputError(f"results frame lacks columns {missing}; it has {list(results.columns)}")
    out = results.copy()
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out


def pivot(results: pd.DataFrame, metric: str, neuron: str | None = None, agg: str = "mean") -> pd.DataFrame:
    """Method x model table of ``metric`` aggregated over images (and neurons)."""
    df = check_long(results)
    df = df[df["metric"] == metric]
    if neuron is not None:
        df = df[df["neuron"] == neuron]
    if df.empty:
        return pd.DataFrame()
    table = df.pivot_table(index="method", columns="model", values="value", aggfunc=agg)
    table.columns.name = None
    table.index.name = "method"
    return table


def score_tables(results: pd.DataFrame, scores=SCORES) -> dict[str, tuple[Score, pd.DataFrame]]:
    """The report's score tables that have data: key -> (Score, method x model table)."""
    out = {}
    for s in scores:
        t = pivot(results, s.metric, s.neuron, s.agg)
        if not t.empty:
            out[s.key] = (s, t)
    return out


def best_mask(table: pd.DataFrame, higher_is_better: bool | None) -> pd.DataFrame:
    """Boolean frame marking the best method per model column (ties all marked)."""
    if higher_is_better is None or table.empty:
        return pd.DataFrame(False, index=table.index, columns=table.columns)
    best = table.max() if higher_is_better else table.min()
    return table.eq(best, axis=1) & table.notna()


def rank_scores(table: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Per model column, each method's rank scaled to [0, 1]: 1 = alone best, 0 = alone
    worst; tied methods share the average of their ranks (``scipy.stats.rankdata``,
    ``"average"``), so a tie among all methods gives each 0.5, not a win.

    ``table``: method x model (NaN where a method was not measured).  Returns the same
    shape; NaN where the method has no value or fewer than two methods have one.
    """
    out = pd.DataFrame(np.nan, index=table.index, columns=table.columns)
    for col in table.columns:
        vals = table[col].dropna()
        if len(vals) < 2:
            continue
        ranks = rankdata(vals.to_numpy() if higher_is_better else -vals.to_numpy(), method="average")
        out.loc[vals.index, col] = (ranks - 1.0) / (len(vals) - 1.0)
    return out


def totals(results: pd.DataFrame, scores=SCORES) -> pd.DataFrame:
    """Per-method totals across the score tables, best first.

    Columns: ``rank_score`` (mean over every directed table's model columns of
    :func:`rank_scores`: 1 = alone best everywhere, 0 = alone worst, 0.5 = tied with all
    or middling; ties do not count as wins), ``sole_best`` (model columns in which the
    method alone is best), ``columns`` (model columns scored), and ``pointing_game_hits``
    (images whose heatmap maximum hit the object, summed over models — the objective
    counterpart of the study's "hits"; fractional where the maximum is tied).  Sorted by
    ``rank_score``, then ``sole_best``, then method name.
    """
    df = check_long(results)
    df = df[~df["method"].astype(str).str.startswith(CONTROL_PREFIX)]  # controls are not ranked
    results = df
    methods = sorted(df["method"].unique())
    out = pd.DataFrame(index=pd.Index(methods, name="method"))
    scaled, sole = [], pd.Series(0, index=methods)
    for s, t in score_tables(results, scores).values():
        if s.higher_is_better is None:
            continue
        r = rank_scores(t, s.higher_is_better)
        scaled.append(r)
        alone = best_mask(t, s.higher_is_better)
        # columns with exactly one best method among at least two measured
        alone = alone & (alone.sum(axis=0) == 1) & (t.notna().sum(axis=0) >= 2)
        sole = sole.add(alone.sum(axis=1), fill_value=0)
    stacked = pd.concat(scaled, axis=1) if scaled else pd.DataFrame(index=methods)
    out["rank_score"] = stacked.mean(axis=1).reindex(methods)
    out["sole_best"] = sole.reindex(methods).fillna(0).astype(int)
    out["columns"] = stacked.notna().sum(axis=1).reindex(methods).fillna(0).astype(int)
    pg = df[(df["metric"] == "pointing_game") & (df["neuron"] == "logit")]
    hits = pg.groupby("method")["value"].sum().reindex(methods).fillna(0)
    # a tie among maximal pixels scores the fraction of them that hit, so hits may be fractional
    out["pointing_game_hits"] = hits.astype(int) if (hits % 1 == 0).all() else hits.round(2)
    return out.sort_values(["rank_score", "sole_best", "method"], ascending=[False, False, True],
                           na_position="last")


def to_html(table: pd.DataFrame, higher_is_better: bool | None = None, fmt: str = "{:.3f}") -> str:
    """HTML table with the best value per column in bold (class ``best``)."""
    if table.empty:
        return "<p><em>no data</em></p>"
    mask = best_mask(table, higher_is_better)

    def cell(v, b):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return '<td class="na">n/a</td>'
        if isinstance(v, (bool, np.bool_)) or isinstance(v, (int, np.integer)):
            text = str(int(v))  # counts (hits, sole_best) stay integers
        else:
            text = fmt.format(v) if isinstance(v, (float, np.floating)) else str(v)
        return f'<td class="best">{text}</td>' if b else f"<td>{text}</td>"

    head = "".join(f"<th>{c}</th>" for c in table.columns)
    rows = []
    for idx in table.index:
        cells = "".join(cell(table.at[idx, c], bool(mask.at[idx, c])) for c in table.columns)
        rows.append(f"<tr><th>{idx}</th>{cells}</tr>")
    return (f'<table class="scores"><thead><tr><th>{table.index.name or ""}</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")
