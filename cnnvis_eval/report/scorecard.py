"""The trust scorecard at the top of a report: which checks each method passes, from a verdict frame.

A verdict frame is what :func:`cnnvis_eval.testing.verdict_frame` writes to
``verdicts.parquet`` (check and plugin runs, the suite's record plugin, a grid run's
derived verdicts): long-frame rows with the extra columns ``status`` (``pass``, ``fail``,
``inconclusive``, ``n/a``), ``threshold``, ``reason`` and ``known_failure``; one row per
(model, method, check) whose ``metric`` is the check, and one per control value whose
``metric`` is ``"<check>:control:<name>"``.  This module reads only those columns (the
report layer sits below :mod:`cnnvis_eval.testing`).

Several rows of one (method, check) -- several models, or a suite test run with several
parameters -- make one cell: ``fail`` if any failed, else ``pass`` if any passed, else
``inconclusive`` if any was, else ``n/a``; the cell says how many agree and its hover title
lists every row.  A cell is a *known* failure when every failing row carries a citation.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from ..errors import InputError

ORDER = ("fail", "pass", "inconclusive", "n/a")
"""Which status a cell of several verdicts shows: the first of these that occurs."""
CSS = {"pass": "v-pass", "fail": "v-fail", "inconclusive": "v-inconclusive", "n/a": "v-na"}
CONTROL = ":control:"
WIDE = 8
"""More checks than this: the table's column headers are set vertically."""
_PHRASE = {"pass": "passes", "fail": "fails", "inconclusive": "inconclusive:", "n/a": "n/a:"}


def split(verdicts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, controls)``: the verdict rows and the control rows of a verdict frame;
    controls get the columns ``check`` and ``control`` parsed from ``metric``."""
    if verdicts.empty:
        return verdicts.iloc[:0], verdicts.iloc[:0]
    missing = [c for c in ("method", "metric", "value", "status") if c not in verdicts.columns]
    if missing:
        raise InputError(f"the verdict frame lacks the columns {missing} (verdicts.parquet is written by "
                         f"cnnvis_eval.testing.verdict_frame); it has {list(verdicts.columns)}")
    df = verdicts.copy()
    for col in ("status", "threshold", "reason", "known_failure", "model"):
        df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    is_control = df["metric"].astype(str).str.contains(CONTROL, regex=False)
    controls = df[is_control].copy()
    parts = controls["metric"].str.split(CONTROL, n=1, regex=False)
    controls["check"], controls["control"] = parts.str[0], parts.str[1]
    return df[~is_control], controls


def _fmt(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _cell_status(statuses: pd.Series, known: pd.Series) -> tuple[str, bool]:
    """(status, known) of a cell of several verdict rows (see the module docstring)."""
    status = next(s for s in (*ORDER, *statuses) if (statuses == s).any())
    fails = known[statuses == "fail"]
    return status, status == "fail" and bool((fails != "").all())


def _row_text(row, controls: dict) -> str:
    """One hover line: model, status, value vs threshold, controls (``controls``: the control
    rows by (model, method, check)), reason, citation."""
    ctl = controls.get((row.model, row.method, row.metric), _NO_CONTROLS)
    parts = [f"{row.model + ': ' if row.model else ''}{row.status}"]
    if not math.isnan(row.value):
        parts.append(f"value {_fmt(row.value)}" + (f" (threshold {row.threshold})" if row.threshold else ""))
    elif row.threshold:
        parts.append(f"threshold {row.threshold}")
    if len(ctl):
        parts.append("controls: " + ", ".join(f"{c.control}={_fmt(c.value)}" for c in ctl.itertuples()))
    if row.reason:
        parts.append(row.reason)
    if row.known_failure:
        parts.append(f"known failure: {row.known_failure}")
    return "; ".join(parts)


def status_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Method x check table of cell statuses (``"fail (known)"`` for a predicted failure,
    empty where a method was not checked); methods and checks in order of first appearance.
    This is ``table_scorecard.csv``."""
    cells, _ = split(verdicts)
    if cells.empty:
        return pd.DataFrame()
    methods, checks = list(dict.fromkeys(cells["method"])), list(dict.fromkeys(cells["metric"]))
    out = pd.DataFrame("", index=pd.Index(methods, name="method"), columns=checks)
    for (method, check), g in cells.groupby(["method", "metric"], sort=False):
        status, known = _cell_status(g["status"], g["known_failure"])
        out.at[method, check] = f"{status} (known)" if known else status
    return out


def summary_lines(verdicts: pd.DataFrame) -> dict[str, str]:
    """One line per method: what it passes, what it fails (predicted failures apart, with
    their citations), where the verdict is inconclusive and which checks do not apply.

    Example: ``"grad_cam: passes randomization.cascading_top, class_sensitivity; fails
    faithfulness.road; inconclusive: stability"``.
    """
    table = status_table(verdicts)
    cells, _ = split(verdicts)
    out = {}
    for method in table.index:
        row = table.loc[method]
        clauses = []
        for status in ("pass", "fail", "inconclusive", "n/a"):
            checks = [c for c in table.columns if row[c] == status]
            if checks:
                clauses.append(f"{_PHRASE[status]} {', '.join(checks)}")
            if status == "fail":
                known = [c for c in table.columns if row[c] == "fail (known)"]
                if known:
                    mine = cells[(cells["method"] == method) & cells["metric"].isin(known)]
                    cites = "; ".join(dict.fromkeys(k for k in mine["known_failure"] if k))
                    clauses.append(f"fails as the literature predicts {', '.join(known)} ({cites})")
        out[method] = f"{method}: {'; '.join(clauses)}"
    return out


def controls_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """(model, check) x control table of the controls' values (mean over the methods that
    carry them: a control is measured once per model and check, so they agree)."""
    _, controls = split(verdicts)
    if controls.empty:
        return pd.DataFrame()
    table = controls.pivot_table(index=["model", "check"], columns="control", values="value", aggfunc="mean",
                                 sort=False, dropna=False)
    table.columns.name = None
    return table


_NO_CONTROLS = pd.DataFrame(columns=["control", "value"])


def _cell_html(g: pd.DataFrame, controls: dict, notes: dict) -> str:
    status, known = _cell_status(g["status"], g["known_failure"])
    title = html.escape("\n".join(_row_text(r, controls) for r in g.itertuples()), quote=True)
    cls = CSS[status] + (" v-known" if known else "")
    label = html.escape(status)
    if known:
        refs = []
        for cite in dict.fromkeys(k for k in g["known_failure"] if k):
            notes.setdefault(cite, len(notes) + 1)
            refs.append(f"[{notes[cite]}]")
        label += f' <span class="known">known {"".join(refs)}</span>'
    if len(g) == 1:
        below = _fmt(float(g["value"].iloc[0]))
    else:
        below = f"{int((g['status'] == status).sum())} of {len(g)}"
    return f'<td class="v {cls}" title="{title}">{label}<br><span class="val">{html.escape(below)}</span></td>'


def section(verdicts: pd.DataFrame) -> str:
    """The scorecard's HTML: the method x check table, one summary line per method, the
    citations of the predicted failures and the controls' values; one line when there are
    no verdicts."""
    cells, controls = split(verdicts)
    if cells.empty:
        return ('<p class="desc"><em>No verdicts in this folder: run <code>cnnvis-eval check</code> or '
                "<code>pytest --cnnvis-model ... --cnnvis-report DIR</code> to score the methods.</em></p>")
    methods, checks = list(dict.fromkeys(cells["method"])), list(dict.fromkeys(cells["metric"]))
    groups = {k: g for k, g in cells.groupby(["method", "metric"], sort=False)}
    by_cell = {k: g for k, g in controls.groupby(["model", "method", "check"], sort=False)} if len(controls) else {}
    notes: dict[str, int] = {}
    rows = []
    for m in methods:
        tds = "".join(_cell_html(groups[m, c], by_cell, notes) if (m, c) in groups else '<td class="v v-none"></td>'
                      for c in checks)
        rows.append(f"<tr><th>{html.escape(m)}</th>{tds}</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in checks)
    models = sorted({m for m in cells["model"] if m})
    out = ['<p class="desc">Cells: <span class="v-pass">pass</span> <span class="v-fail">fail</span> '
               '<span class="v-fail v-known">fail, predicted by the literature</span> '
               '<span class="v-inconclusive">inconclusive</span> <span class="v-na">n/a</span>; the measured '
               "value below the verdict (or how many of several rows agree); hover a cell for value, threshold, "
               "controls and reason." + (f" Models: {html.escape(', '.join(models))}." if models else "") + "</p>"]
    wide = ' data-wide="1"' if len(checks) > WIDE else ""  # headers set vertically (a suite run's many tests)
    out.append(f'<div class="scroll"><table class="scorecard"{wide}><thead><tr><th>method</th>{head}</tr></thead>'
               f"<tbody>{''.join(rows)}</tbody></table></div>")
    if notes:
        out.append('<ol class="citations">' + "".join(f'<li value="{i}">{html.escape(c)}</li>'
                                                        for c, i in notes.items()) + "</ol>")
    out.append('<ul class="trust">' + "".join(f"<li>{html.escape(s)}</li>"
                                               for s in summary_lines(verdicts).values()) + "</ul>")
    ctl = controls_table(verdicts)
    if not ctl.empty:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ctl.columns)
        body = "".join(f"<tr><th>{html.escape(str(model))}</th><th>{html.escape(str(check))}</th>"
                       + "".join(f"<td>{_fmt(float(ctl.at[(model, check), c]))}</td>" for c in ctl.columns)
                       + "</tr>" for model, check in ctl.index)
        out.append('<h3>Controls</h3><p class="desc">the controls measured on the same model and images '
                   "(model-blind edge detector, plain gradient, random orders, ...)</p>"
                   f'<table class="controls"><thead><tr><th>model</th><th>check</th>{head}</tr></thead>'
                   f"<tbody>{body}</tbody></table>")
    return "".join(out)


__all__ = ["CSS", "ORDER", "controls_table", "section", "split", "status_table", "summary_lines"]
