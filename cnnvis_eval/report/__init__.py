"""Reports: pandas score tables, matplotlib figures, and a self-contained HTML page.

:func:`build_report` turns a results folder (a grid run, or a suite run written with
``pytest --cnnvis-report DIR``) into ``DIR/index.html`` plus the figures as PNG files in
``DIR/figures/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import benchmarks as bench_io
from . import figures, html, remedies, scorecard, study, tables

__all__ = ["build_report", "benchmarks", "figures", "html", "remedies", "scorecard", "study", "tables"]


def _read(path: Path) -> pd.DataFrame:
    if path.is_file():
        return pd.read_parquet(path)
    csv = path.with_suffix(".csv")
    return pd.read_csv(csv) if csv.is_file() else pd.DataFrame()


def _signed_methods() -> dict:
    try:
        from ..methods.base import METHODS

        return {n: bool(getattr(c, "signed", False)) for n, c in METHODS.items()}
    except Exception:  # pragma: no cover - report built without the methods
        return {}


# Methods whose maps carry a large constant offset (RISE: the expected score of the masked
# image) are shown min-max scaled, as in their paper; scaled by |max| they would be uniform.
OFFSET_METHODS = frozenset({"rise"})


def _run_files(root: Path, cells: pd.DataFrame) -> dict:
    """``{model: (images .npz, {(method, neuron): heatmap .npz})}`` of a grid run: from the
    cell table's ``model_key`` and ``file`` columns (results stored by content, see
    :mod:`cnnvis_eval.evaluation.store`), else ``images/<model>.npz`` and
    ``heatmaps/<model>/<method>/<neuron>.npz`` (folders written before that)."""
    out = {}
    if not cells.empty and {"model_key", "file"} <= set(cells.columns):
        for m, g in cells[cells["model_key"].fillna("").astype(bool)].groupby("model"):
            img = root / "images" / f"{g['model_key'].iloc[0]}.npz"
            if img.is_file():
                out[m] = (img, {(r.method, r.neuron): root / r.file for r in g.itertuples() if r.file})
        return out
    for img in sorted((root / "images").glob("*.npz")):
        m = img.stem
        out[m] = (img, {(p.parent.name, p.stem): p for p in (root / "heatmaps" / m).glob("*/*.npz")})
    return out


def _grid_figures(root: Path, cells: pd.DataFrame, max_images: int) -> list[dict]:
    """One heatmap grid per (image, neuron): rows methods, columns models."""
    files = _run_files(root, cells)
    models = sorted(files)
    if not models:
        return []
    images, ids, classes = {}, {}, {}
    for m in models:
        with np.load(files[m][0]) as z:
            images[m], ids[m] = z["images"], [str(i) for i in z["ids"]]
            classes[m] = [str(c) for c in z["class_names"]] if "class_names" in z.files else []
    methods = sorted({meth for m in models for meth, _ in files[m][1]})
    if not methods:
        return []
    signed = {k: v and k not in OFFSET_METHODS for k, v in _signed_methods().items()}
    common = [i for i in ids[models[0]] if all(i in ids[m] for m in models)]
    # prefer showing photos and synthetic images alike: alternate them
    generated = ("syn", "scene", "bird")  # the generated benchmark images (evaluation.inputs.image_set)
    photos = [i for i in common if not i.startswith(generated)]
    syn = [i for i in common if i.startswith(generated)]
    chosen = [v for pair in zip(photos, syn) for v in pair] + photos[len(syn):] + syn[len(photos):]
    chosen = chosen[:max_images]
    layers = {}
    if not cells.empty:
        for (m, neuron), row in cells.groupby(["model", "neuron"]):
            layers[(m, neuron)] = str(row["layer"].iloc[0])
    figs = {}
    for neuron in ["logit", "mid", "high"]:
        # each heatmap file read once per neuron, for the chosen images only
        maps = {image: {} for image in chosen}
        labels = {image: {} for image in chosen}
        for m in models:
            rows = [ids[m].index(image) for image in chosen]
            for meth in methods:
                p = files[m][1].get((meth, neuron))
                if p is None or not p.is_file():
                    continue
                with np.load(p) as z:
                    heat, idx = z["heatmap"][rows].astype(np.float32), z["indices"][rows]
                for image, h, i in zip(chosen, heat, idx):
                    maps[image][(meth, m)] = h - h.min() if meth in OFFSET_METHODS else h
                    i = int(i)
                    if neuron != "logit":
                        what = f"{layers.get((m, neuron), '')}\nchannel {i}"
                    elif 0 <= i < len(classes[m]):
                        what = f"class {i}\n{classes[m][i][:24]}"
                    else:
                        what = f"class {i}"
                    labels[image][m] = f"{m}\n{what}"
        for image in chosen:
            if maps[image]:
                figs[(image, neuron)] = figures.heatmap_grid(
                    root / "figures" / f"grid_{image}_{neuron}.png",
                    {m: images[m][ids[m].index(image)] for m in models}, maps[image], methods, models,
                    signed=signed, title=f"{image} — neuron: {neuron}", col_labels=labels[image])
    return [html.figure(figs[(image, neuron)], f"{image}, neuron {neuron}")
            for image in chosen for neuron in ["logit", "mid", "high"] if (image, neuron) in figs]


def _study_html(root: Path, results: pd.DataFrame) -> str:
    """The study's Table 2 beside its objective counterpart (:mod:`.study`), or ''."""
    if results.empty:
        return ""
    ours, cells = study.table2(results)
    if ours.empty:
        return ""
    ours.to_csv(root / "table_study_hits.csv")
    cells.to_csv(root / "table_study_cells.csv")
    cmp = study.compare(ours)
    theirs = study.STUDY_TABLE2.copy()
    theirs["total"] = theirs.sum(axis=1)
    rho = "n/a" if np.isnan(cmp["rho"]) else f"{cmp['rho']:+.2f}"
    return (f'<p class="desc">Rule per cell: {study.RULE}</p>'
            '<div class="side"><div><h3>This run: hits (objective rule)</h3>' + tables.to_html(ours, True)
            + '<p class="desc">cells scored per method and architecture</p>' + tables.to_html(cells, None)
            + "</div><div><h3>The study: hits (by eye)</h3>" + tables.to_html(theirs, True) + "</div></div>"
            + f"<p>Spearman rank correlation between the two method totals: <b>{rho}</b> "
              f"(over {len(cmp['methods'])} methods). {cmp['sentence']}</p>")


def _benchmark_html(root: Path, bench: pd.DataFrame) -> str:
    """The benchmark section: method x architecture ratios, then the other benchmarks."""
    source = f" from <code>{bench['source'].iloc[0]}</code>" if "source" in bench.columns else ""
    out = [f"<h3>Benchmarks (pytest-benchmark){source}</h3>"]
    table = bench_io.ratio_table(bench)
    if not table.empty:
        table.index.name = "method"
        table.to_csv(root / "table_benchmarks.csv")
        out.append('<p class="desc">time of each method on a batch divided by a plain forward+backward pass of '
                   "the same model on the same batch, measured alternately in the same run — best per column in "
                   "bold (lower is better).</p>" + tables.to_html(table, False, "{:.2f}"))
    others = bench[bench["arch"] == ""] if "arch" in bench.columns else bench
    if len(others):
        cols = [c for c in ("name", "method", "ratio", "reference", "goal", "median_s", "baseline_median_s")
                if c in others.columns and others[c].astype(str).ne("").any()]
        out.append('<p class="desc">per-issue speed benchmarks (ratio to the reference they name)</p>'
                   + others[cols].to_html(index=False, float_format="%.3f", na_rep="-"))
    return "".join(out)


def build_report(results_dir: str | Path, title: str | None = None, max_images: int = 4,
                 benchmarks: str | Path | None = None) -> Path:
    """Write ``index.html`` (and ``figures/*.png``) for a results folder; returns its path.

    ``benchmarks``: a pytest-benchmark JSON file, or a folder holding them (its newest is
    read, e.g. ``fixtures/benchmarks``), copied into the folder as ``benchmarks.parquet``
    (:func:`.benchmarks.benchmark_frame`) and shown in the cost section; without it the
    folder's own ``benchmarks.parquet`` is shown, if any.

    The scorecard of ``verdicts.parquet`` comes first (also written as
    ``table_scorecard.csv``); a folder with verdicts and no results gets the scorecard alone.
    A folder with ``remedies.parquet`` (``cnnvis-eval remedy --out``) gets the remedies'
    section (:func:`.remedies.folder_section`: table, lambda curves, ``remedies_cams*.png``),
    also when it holds nothing else.
    """
    from ..errors import InputError
    from ..frame import COLUMNS

    root = Path(results_dir)
    results = _read(root / "results.parquet")
    verdicts = _read(root / "verdicts.parquet")
    remedy_html = remedies.folder_section(root)
    if results.empty and verdicts.empty and not remedy_html:
        raise InputError(f"{str(root)!r} has no results.parquet / results.csv (nor verdicts.parquet, "
                         "remedies.parquet) to report on")
    if results.empty:
        results = pd.DataFrame(columns=list(COLUMNS))
    card = scorecard.status_table(verdicts)
    if not card.empty:
        card.to_csv(root / "table_scorecard.csv")
    if benchmarks is not None:
        source, benches = bench_io.load_benchmarks(benchmarks)
        bench_io.benchmark_frame(benches).assign(source=str(source)).to_parquet(
            root / "benchmarks.parquet", index=False)
    cells = _read(root / "cells.parquet")
    curves = _read(root / "curves.parquet")
    agreement = _read(root / "agreement.parquet")
    bench = _read(root / "benchmarks.parquet")

    score_html = []
    for s, t in tables.score_tables(results).values():
        better = {True: "higher", False: "lower", None: ""}[s.higher_is_better]
        score_html.append({"title": s.title, "description": s.description, "better": better,
                           "html": tables.to_html(t, s.higher_is_better)})
        t.to_csv(root / f"table_{s.key}.csv")
    totals = tables.totals(results)
    if not results.empty:
        totals.to_csv(root / "table_totals.csv")
    study_html = _study_html(root, results)

    agree_figs = []
    if not agreement.empty:
        for (model, neuron), g in agreement.groupby(["model", "neuron"]):
            if neuron != "logit":
                continue
            mat = g.pivot(index="method_a", columns="method_b", values="value")
            png = figures.agreement_heatmap(root / "figures" / f"agreement_{model}.png", mat,
                                            f"{model}: mean Spearman (|maps|)")
            agree_figs.append(html.figure(png, f"Agreement between methods on {model} (top-class heatmaps)"))

    curve_figs = []
    if not curves.empty:
        png = figures.randomization_curves(root / "figures" / "randomization.png", curves, "spearman_abs")
        curve_figs.append(html.figure(png, "Spearman rank correlation (absolute maps) with the trained model's "
                                           "heatmap as the model is re-initialized from the top down"))

    cost = tables.pivot(results, "cost_ratio", None)
    cost_figs = []
    cost_html = tables.to_html(cost, False, "{:.2f}") if not cost.empty else "<p><em>no cost measurements</em></p>"
    if not cost.empty:
        cost_figs.append(html.figure(figures.cost_chart(root / "figures" / "cost.png", cost),
                                     "Cost per image relative to one plain forward+backward pass"))
    reference = _read(root / "reference.parquet")
    if not reference.empty:
        cost_html += ("<p class=\"desc\">Reference: one plain forward+backward pass per image (seconds)</p>"
                      + reference.to_html(index=False, float_format="%.4f"))
    if not bench.empty:
        cost_html += _benchmark_html(root, bench)

    cells_html = "<p><em>no cell table</em></p>"
    if not cells.empty:
        summary = cells.pivot_table(index="method", columns="status", values="model", aggfunc="count").fillna(0)
        cells_html = summary.astype(int).to_html()
        bad = cells[cells["status"] != "ok"][["model", "method", "neuron", "status", "message"]]
        if len(bad):
            cells_html += bad.to_html(index=False)

    config = ""
    cfg = root / "config.json"
    if cfg.is_file():
        try:
            config = json.dumps(json.loads(cfg.read_text()), indent=2, sort_keys=True)
        except ValueError as err:
            config = f"config.json cannot be read: {err}"
    return html.render(
        root / "index.html",
        title=title or f"cnnvis_eval report — {root.name}",
        subtitle=f"{results['method'].nunique()} methods, {results['model'].nunique()} models, "
                 f"{len(results)} measurements",
        scorecard=scorecard.section(verdicts),
        tables=score_html,
        totals=tables.to_html(totals, None, "{:.2f}"),
        study=study_html,
        grids=_grid_figures(root, cells, max_images),
        agreement=agree_figs,
        curves=curve_figs,
        cost=cost_html,
        cost_figs=cost_figs,
        cells=cells_html,
        remedies=remedy_html,
        config=config,
    )
