"""Score tables (pivots of the long frame), and the self-contained HTML report.

Every table must equal an independent pandas ``groupby`` of the long results frame; the
report must need no network (no http(s) resource, every image a PNG data URI), mark the
best value per column, and name the neuron explained in every heatmap-grid column.
"""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval.errors import InputError
from cnnvis_eval.report import build_report, figures, tables
from suites.support.grid_fixtures import cell_file, png_size, tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)[0]


def random_long_frame(seed: int = 0) -> pd.DataFrame:
    """A long frame with every score metric, missing (method, model) pairs, NaNs and ties."""
    rng = np.random.default_rng(seed)
    rows = []
    methods, models = ["m_a", "m_b", "m_c", "m_d"], ["arch1", "arch2", "arch3"]
    for metric in [s.metric for s in tables.SCORES] + ["sparseness"]:
        for method in methods:
            for model in models:
                if (method, model) == ("m_d", "arch2"):
                    continue  # a cell that did not apply
                for neuron in ("logit", "mid", "high"):
                    for image in range(3):
                        if metric == "pointing_game":
                            v = float(rng.integers(0, 2))
                        else:
                            v = float(np.round(rng.normal(), 1))  # rounding makes ties
                        rows.append((method, model, f"img{image}", neuron, metric, v))
    df = pd.DataFrame(rows, columns=tables.COLUMNS)
    df.loc[rng.choice(len(df), 5, replace=False), "value"] = np.nan
    return df


def groupby_table(df, metric, neuron) -> pd.DataFrame:
    """Independent method x model mean table."""
    sel = df[df["metric"] == metric]
    if neuron is not None:
        sel = sel[sel["neuron"] == neuron]
    return sel.groupby(["method", "model"])["value"].mean().unstack("model")


def best_cells(table: pd.DataFrame, higher: bool) -> set:
    """(method, model) of the best value per model column, computed cell by cell."""
    out = set()
    for col in table.columns:
        vals = {m: table.at[m, col] for m in table.index if not np.isnan(table.at[m, col])}
        if not vals:
            continue
        best = max(vals.values()) if higher else min(vals.values())
        out |= {(m, col) for m, v in vals.items() if v == best}
    return out


def test_pivots_match_groupby():
    df = random_long_frame()
    built = tables.score_tables(df)
    assert set(built) == {s.key for s in tables.SCORES}
    for score, table in built.values():
        expected = groupby_table(df, score.metric, score.neuron)
        pd.testing.assert_frame_equal(table, expected, check_names=False, check_like=True)
        assert np.isnan(table.at["m_d", "arch2"])
        if score.higher_is_better is not None:
            mask = tables.best_mask(table, score.higher_is_better)
            assert {(m, c) for m in mask.index for c in mask.columns if mask.at[m, c]} == best_cells(
                expected, score.higher_is_better)


def test_totals_match_groupby():
    """rank_score recomputed cell by cell: a method's scaled rank in a column is (methods
    strictly worse + half the methods tied with it) / (methods measured - 1)."""
    df = random_long_frame(1)
    tot = tables.totals(df)
    pg = df[(df["metric"] == "pointing_game") & (df["neuron"] == "logit")].groupby("method")["value"].sum()
    assert tot["pointing_game_hits"].to_dict() == pg.to_dict()
    assert tot["pointing_game_hits"].dtype == np.int64  # whole hits stay integers
    scaled = {m: [] for m in tot.index}
    sole = dict.fromkeys(tot.index, 0)
    for s in tables.SCORES:
        if s.higher_is_better is None:
            continue
        t = groupby_table(df, s.metric, s.neuron)
        sign = 1 if s.higher_is_better else -1
        for col in t.columns:
            vals = {m: sign * t.at[m, col] for m in t.index if not np.isnan(t.at[m, col])}
            for m, v in vals.items():
                worse = sum(w < v for w in vals.values())
                tied = sum(w == v for w in vals.values()) - 1
                scaled[m].append((worse + tied / 2) / (len(vals) - 1))
            best = [m for m, v in vals.items() if v == max(vals.values())]
            if len(best) == 1:
                sole[best[0]] += 1
    assert tot["rank_score"].to_dict() == pytest.approx({m: np.mean(v) for m, v in scaled.items()})
    assert tot["columns"].to_dict() == {m: len(v) for m, v in scaled.items()}
    assert tot["sole_best"].to_dict() == sole
    assert list(tot["rank_score"]) == sorted(tot["rank_score"], reverse=True)
    assert "wins" not in tot.columns


def _long(table: dict, metric: str) -> list:
    """Rows of the long frame for {method: {model: value}} (one logit image per cell)."""
    return [(m, model, "img0", "logit", metric, v) for m, row in table.items() for model, v in row.items()]


def _totals(*parts) -> pd.DataFrame:
    return tables.totals(pd.DataFrame([r for p in parts for r in p], columns=tables.COLUMNS))


ALL_TIED = {m: {"arch1": 1.0, "arch2": 1.0} for m in ("m_a", "m_b", "m_c")}
"""Pointing game 1.0 for every method on both models (the default run's situation)."""
SEPARATED = ({"m_a": {"arch1": 0.9, "arch2": 0.8}, "m_b": {"arch1": 0.5, "arch2": 0.4},
              "m_c": {"arch1": 0.1, "arch2": 0.2}}, "relevance_mass_accuracy",  # higher is better
             {"m_a": {"arch1": 1.0, "arch2": 2.0}, "m_b": {"arch1": 3.0, "arch2": 4.0},
              "m_c": {"arch1": 5.0, "arch2": 6.0}}, "deletion_auc")  # lower is better


def test_totals_all_tied_column_is_no_win():
    """Every method at 1.000 on every column: the same middle score for all, no sole best
    (the old ``wins`` column gave each of them 2 wins)."""
    tot = _totals(_long(ALL_TIED, "pointing_game"))
    assert tot["rank_score"].to_dict() == {"m_a": 0.5, "m_b": 0.5, "m_c": 0.5}
    assert tot["sole_best"].to_dict() == {"m_a": 0, "m_b": 0, "m_c": 0}
    assert list(tot.index) == ["m_a", "m_b", "m_c"]  # equal scores: by name


def test_totals_strictly_best_is_first_with_score_one_and_ties_elsewhere_keep_the_order():
    a, ma, b, mb = SEPARATED
    tot = _totals(_long(a, ma), _long(b, mb))
    assert list(tot.index) == ["m_a", "m_b", "m_c"]
    # m_a best on 4 columns -> 1; m_b middle of 3 -> 0.5; m_c worst -> 0
    assert tot["rank_score"].to_dict() == {"m_a": 1.0, "m_b": 0.5, "m_c": 0.0}
    assert tot["sole_best"].to_dict() == {"m_a": 4, "m_b": 0, "m_c": 0}
    assert tot["columns"].to_dict() == {"m_a": 4, "m_b": 4, "m_c": 4}
    tied = _totals(_long(a, ma), _long(b, mb), _long(ALL_TIED, "pointing_game"))
    assert list(tied.index) == ["m_a", "m_b", "m_c"]
    # two all-tied columns (0.5 each) join the four: m_a (4 + 1) / 6, m_c (0 + 1) / 6
    assert tied["rank_score"].to_dict() == pytest.approx({"m_a": 5 / 6, "m_b": 0.5, "m_c": 1 / 6})
    assert tied["sole_best"].to_dict() == {"m_a": 4, "m_b": 0, "m_c": 0}


def test_totals_partial_ties_share_the_average_rank():
    """Column 1 (higher better) a=3, b=c=1, d=0: ranks d 1, b/c 2.5, a 4 -> scaled 0, 0.5, 1;
    column 2 a=0, b=c=d=2: a 0, b/c/d rank 3 -> 2/3.  Means: a 1/2, b and c 7/12, d 1/3.
    A sole best in one column (a) does not outrank a steadier method."""
    t = {"m_a": {"arch1": 3.0, "arch2": 0.0}, "m_b": {"arch1": 1.0, "arch2": 2.0},
         "m_c": {"arch1": 1.0, "arch2": 2.0}, "m_d": {"arch1": 0.0, "arch2": 2.0}}
    tot = _totals(_long(t, "relevance_mass_accuracy"))
    assert tot["rank_score"].to_dict() == pytest.approx({"m_a": 0.5, "m_b": 7 / 12, "m_c": 7 / 12, "m_d": 1 / 3})
    assert tot["sole_best"].to_dict() == {"m_a": 1, "m_b": 0, "m_c": 0, "m_d": 0}
    assert list(tot.index) == ["m_b", "m_c", "m_a", "m_d"]


def test_to_html_marks_best_per_column():
    t = pd.DataFrame({"a": [0.1, 0.5, np.nan], "b": [0.9, 0.2, 0.2]}, index=pd.Index(["x", "y", "z"], name="method"))
    low = tables.to_html(t, higher_is_better=False)
    assert re.findall(r'<td class="best">([^<]*)</td>', low) == ["0.100", "0.200", "0.200"]  # ties both marked
    assert '<td class="na">n/a</td>' in low
    high = tables.to_html(t, higher_is_better=True)
    assert re.findall(r'<td class="best">([^<]*)</td>', high) == ["0.900", "0.500"]
    assert "best" not in tables.to_html(t, higher_is_better=None)
    with pytest.raises(InputError, match="lacks columns"):
        tables.pivot(t, "x")


class Page(HTMLParser):
    """Collects resource references, images and score tables of a report page."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.imgs: list[str] = []
        self.tables: list[dict] = []  # {"title", "rows": [(row header, [(text, is_best)])], "head"}
        self._title, self._text, self._cell, self._row, self._in_style = "", "", None, None, False
        self.styles = ""
        self._in_scores = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "srcset", "poster", "data", "action"):
            if key in a:
                self.refs.append((tag, key, a[key] or ""))
        if "style" in a:
            self.styles += a["style"]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "style":
            self._in_style = True
        if tag in ("h3",):
            self._text = ""
        if tag == "table":
            self._in_scores = "scores" in (a.get("class") or "")
            if self._in_scores:
                self.tables.append({"title": self._title, "head": [], "rows": []})
        if self._in_scores and tag == "tr":
            self._row = [None, []]
        if self._in_scores and tag in ("td", "th"):
            self._cell = [tag, "", "best" in (a.get("class") or "")]

    def handle_data(self, data):
        self._text += data
        if self._in_style:
            self.styles += data
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        if tag == "table":
            self._in_scores = False
        if tag == "h3":
            self._title = self._text.strip()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            kind, text, best = self._cell
            if kind == "th" and self._row[0] is None:
                self._row[0] = text
            elif kind == "th":
                self.tables[-1]["head"].append(text)
            else:
                self._row[1].append((text, best))
            self._cell = None
        if tag == "tr" and self._row is not None and self.tables:
            if self._row[1]:
                self.tables[-1]["rows"].append(tuple(self._row))
            self._row = None


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_is_self_contained(run_dir):
    page_path = run_dir / "index.html"
    page = parse(page_path)
    text = page_path.read_text(encoding="utf-8")
    # no resource from anywhere but the page itself: only data URIs and in-page anchors
    for tag, attr, value in page.refs:
        assert value.startswith(("data:", "#")), f"<{tag} {attr}={value[:60]!r}> needs a file or the network"
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page.styles), "CSS loads a remote resource"
    assert not re.search(r"@import", page.styles)
    assert not re.search(r"<(script|link|iframe)[^>]+(src|href)=", text), "external script/stylesheet/frame"
    # every image is an embedded PNG: exactly the figures written next to the page
    pngs = {p.read_bytes() for p in (run_dir / "figures").glob("*.png")}
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    embedded = [base64.b64decode(src.split(",", 1)[1], validate=True) for src in page.imgs]
    assert set(embedded) == pngs
    for data in embedded:
        w, h = png_size(data)
        assert w >= 200 and h >= 150
    # 3 images x 3 neurons heatmap grids, 2 agreement matrices, randomization curves, cost chart
    assert len(page.imgs) == 9 + 2 + 1 + 1
    for section in ("Scores", "Totals per method", "Heatmaps", "Agreement between methods",
                    "Cascading model-parameter randomization", "Cost and benchmarks", "Cells",
                    "Configuration and versions"):
        assert f">{section}" in text
    config = html.unescape(text.split('id="config"', 1)[1])
    assert '"tensorflow"' in config and '"methods"' in config  # configuration and versions


def test_report_tables_and_best_marks(run_dir):
    """Each score table in the page holds the groupby means, with the column best in bold."""
    results = pd.read_parquet(run_dir / "results.parquet")
    page = parse(run_dir / "index.html")
    by_title = {t["title"]: t for t in page.tables}
    n_best = 0
    for score in tables.SCORES:
        expected = groupby_table(results, score.metric, score.neuron)
        if expected.empty:
            continue
        html_table = by_title[score.title]
        assert html_table["head"] == list(expected.columns)
        assert [r[0] for r in html_table["rows"]] == list(expected.index)
        marked = set()
        for method, cells in html_table["rows"]:
            for model, (text, best) in zip(expected.columns, cells):
                v = expected.at[method, model]
                if np.isnan(v):
                    assert text == "n/a"
                else:
                    fmt = "{:.2f}" if score.key == "cost" else "{:.3f}"
                    assert text == fmt.format(v), (score.key, method, model)
                if best:
                    marked.add((method, model))
        want = best_cells(expected, score.higher_is_better) if score.higher_is_better is not None else set()
        assert marked == want, score.key
        n_best += len(marked)
        # the CSV copy of the table is the same pivot
        csv = pd.read_csv(run_dir / f"table_{score.key}.csv", index_col=0)
        pd.testing.assert_frame_equal(csv, expected, check_names=False, rtol=1e-9)
    assert n_best > 0


def test_grid_run_scorecard_from_its_numbers(run_dir):
    """The grid run writes the verdicts its numbers decide (issue 15, item 4): randomization
    after full cascading randomization = mean ``randomization_similarity`` (logit) against
    0.6, the plain gradient as reference control; faithfulness without its random-order
    control is inconclusive; the page opens with them."""
    results = pd.read_parquet(run_dir / "results.parquet")
    verdicts = pd.read_parquet(run_dir / "verdicts.parquet")
    sim = results[(results["metric"] == "randomization_similarity") & (results["neuron"] == "logit")]
    expected = sim.groupby(["model", "method"])["value"].mean()
    rand = verdicts[verdicts["metric"] == "randomization.cascading_all"].set_index(["model", "method"])
    assert len(expected) >= 4 and set(rand.index) == set(expected.index)
    for key, value in expected.items():
        assert rand.at[key, "value"] == pytest.approx(value)
        assert rand.at[key, "status"] == ("pass" if value < 0.6 else "fail")
    ref = verdicts[verdicts["metric"] == "randomization.cascading_all:control:saliency"].set_index(["model", "method"])
    for (model, method) in ref.index:
        assert method != "saliency" and ref.at[(model, method), "value"] == pytest.approx(expected[model, "saliency"])
    faith = verdicts[verdicts["metric"].str.startswith("faithfulness.")]
    assert len(faith) and set(faith["status"]) == {"inconclusive"}
    text = (run_dir / "index.html").read_text(encoding="utf-8")
    assert text.index('id="scorecard"') < text.index('id="scores"')
    assert '<th>randomization.cascading_all</th>' in text and (run_dir / "table_scorecard.csv").is_file()


def test_heatmap_grid_names_the_neurons(run_dir, monkeypatch):
    """Each grid column names the neuron explained: the class for the logit, layer[channel] otherwise."""
    calls = []

    def spy(path, images, maps, methods, models, **kw):  # records; the drawing is tested elsewhere
        calls.append({"path": Path(path), "maps": maps, "methods": list(methods), "models": list(models), **kw})
        assert Path(path).is_file()  # drawn by the shared run's report
        return path

    monkeypatch.setattr(figures, "heatmap_grid", spy)
    from cnnvis_eval.report import _grid_figures

    _grid_figures(run_dir, pd.read_parquet(run_dir / "cells.parquet"), max_images=4)
    cells = pd.read_parquet(run_dir / "cells.parquet")
    assert len(calls) == 9
    for call in calls:
        image, neuron = call["path"].stem.split("_", 2)[1:]
        assert call["models"] == ["flat_cnn", "gap_cnn"]
        assert "cam" in call["methods"] and "saliency" in call["methods"]
        assert f"neuron: {neuron}" in call["title"]
        for model in call["models"]:
            k = ["syn000", "syn001", "chelsea"].index(image)
            z = np.load(cell_file(run_dir, model, "saliency", neuron))
            label = call["col_labels"][model]
            if neuron == "logit":
                assert label == f"{model}\nclass {int(z['indices'][k])}"
            else:
                layer = cells[(cells["model"] == model) & (cells["neuron"] == neuron)]["layer"].iloc[0]
                assert layer and label == f"{model}\n{layer}\nchannel {int(z['indices'][k])}"
        # n/a cells are passed as absent (drawn as "n/a"), applicable ones as maps of the image size
        assert ("cam", "flat_cnn") not in call["maps"]
        assert (("cam", "gap_cnn") in call["maps"]) == (neuron == "logit")
        assert all(h.shape == (32, 32) for h in call["maps"].values())


def test_report_of_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no results.parquet"):
        build_report(tmp_path)


def test_report_from_a_bare_long_frame(tmp_path):
    """A folder holding only results.csv (e.g. written by another tool) still gets a page."""
    random_long_frame(2).to_csv(tmp_path / "results.csv", index=False)
    page = build_report(tmp_path, title="bare")
    text = page.read_text()
    assert "<h1>bare</h1>" in text and 'class="best"' in text
    assert "no heatmaps" in text


def pytest_benchmark_file(path: Path, entries) -> Path:
    """A pytest-benchmark JSON file: entries are (test id, extra_info, median seconds)."""
    import json

    data = {"machine_info": {}, "commit_info": {}, "datetime": "x", "version": "5.2.3",
            "benchmarks": [{"name": name, "fullname": f"suites/benchmarks/test_x.py::{name}", "group": "g",
                            "stats": {"median": median}, "extra_info": info} for name, info, median in entries]}
    path.write_text(json.dumps(data))
    return path


def test_benchmark_table_from_a_pytest_benchmark_file(tmp_path):
    """``build_report(..., benchmarks=FILE)``: the per-method benchmarks as a method x
    architecture table of ratios (best = lowest per column), the others listed by name."""
    random_long_frame(1).to_csv(tmp_path / "results.csv", index=False)
    entries = [("t[a-x]", {"method": "a", "arch": "x", "ratio": 1.5}, 0.3),
               ("t[b-x]", {"method": "b", "arch": "x", "ratio": 0.75}, 0.1),
               ("t[a-y]", {"method": "a", "arch": "y", "ratio": 2.0}, 0.2),
               ("u[a-y]", {"method": "a", "arch": "y", "ratio": 4.0}, 0.2),  # a second measurement
               ("cost[c-small]", {"method": "c", "model": "small", "ratio": 1.25, "goal": "< 1.2"}, 0.05),
               ("no_ratio", {}, 0.01)]
    page = build_report(tmp_path, benchmarks=pytest_benchmark_file(tmp_path / "b.json", entries)).read_text()
    # expected, by hand: median per (method, arch); b on y was not measured
    want = pd.DataFrame({"x": [1.5, 0.75], "y": [3.0, np.nan]}, index=pd.Index(["a", "b"], name="method"))
    got = pd.read_csv(tmp_path / "table_benchmarks.csv", index_col="method")
    pd.testing.assert_frame_equal(got, want)
    assert "Benchmarks (pytest-benchmark) from <code>" in page
    assert '<tr><th>b</th><td class="best">0.75</td><td class="na">n/a</td></tr>' in page
    assert '<tr><th>a</th><td>1.50</td><td class="best">3.00</td></tr>' in page
    assert "cost[c-small]" in page and "&lt; 1.2" in page and "no_ratio" in page
    stored = pd.read_parquet(tmp_path / "benchmarks.parquet")
    assert len(stored) == len(entries) and stored["ratio"].isna().sum() == 1


@pytest.mark.parametrize("content, message", [
    (None, "no pytest-benchmark JSON file under"),
    ("{not json", "cannot read"),
    ('{"benchmarks": 3}', "is not a pytest-benchmark file"),
])
def test_unreadable_benchmark_file_is_a_clear_error(tmp_path, content, message):
    random_long_frame(1).to_csv(tmp_path / "results.csv", index=False)
    target = tmp_path / "bench"
    target.mkdir()
    if content is not None:
        target = target / "b.json"
        target.write_text(content)
    with pytest.raises(InputError, match=message):
        build_report(tmp_path, benchmarks=target)
    assert not (tmp_path / "index.html").exists()
