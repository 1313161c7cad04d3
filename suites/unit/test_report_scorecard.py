"""The trust scorecard at the top of every report (issue 15, item 4).

- a check/plugin run's ``verdicts.parquet`` (hand-made here: every status, a predicted
  failure, controls) becomes the first section of the page: cells coloured by status, the
  value below, value/threshold/controls/reason on hover, one summary line per method, the
  controls' table, and ``table_scorecard.csv``;
- a grid run's numbers decide only what they can: randomization after full cascading
  randomization against its threshold; faithfulness without the random-order control stays
  inconclusive, never a pass or a fail;
- a suite run (``pytest --cnnvis-report DIR`` with the record plugin) turns the outcomes of
  tests parametrized by a method into verdicts, shipped from pytest-xdist workers like the rows.

Expected statuses, classes and lines are written out here from the hand-made inputs.
"""

from __future__ import annotations

import math
import pickle
from html.parser import HTMLParser
from types import SimpleNamespace

import pandas as pd
import pytest

from cnnvis_eval.errors import InputError
from cnnvis_eval.report import build_report
from cnnvis_eval.testing.grid import grid_verdicts
from cnnvis_eval.testing.verdict import Verdict, verdict_frame
from suites.support import record

CITE = "Adebayo et al. 2018, Sanity Checks for Saliency Maps"
CTL = {"edge_sobel": 0.998, "saliency": 0.21}


def hand_made_verdicts() -> list[Verdict]:
    return [
        Verdict("net", "grad_cam", "randomization.cascading_top", "pass", 0.31, "< 0.9", CTL),
        Verdict("net", "guided_backprop", "randomization.cascading_top", "fail", 0.97, "< 0.9", CTL,
                known_failure=CITE),
        Verdict("net", "grad_cam", "faithfulness.road", "fail", 0.012, "> 0.1", {"random_order": 0.004}),
        Verdict("net", "guided_backprop", "faithfulness.road", "pass", 0.25, "> 0.1", {"random_order": 0.004}),
        Verdict("net", "grad_cam", "stability", "inconclusive", math.nan, "< 0.5", {},
                "every noise sample changed the prediction"),
        Verdict("net", "guided_backprop", "stability", "pass", 0.2, "< 0.5", {}),
        Verdict("net", "grad_cam", "conservation", "n/a", reason="grad_cam does not claim completeness"),
    ]


class Page(HTMLParser):
    """The ids of the page's sections in order, and the rows of its scorecard and controls
    tables: per cell (tag, class, title, text)."""

    def __init__(self, page: str):
        super().__init__()
        self.sections, self.raw = [], {}
        self._table = self._cell = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.sections.append(a.get("id"))
        elif tag == "table" and a.get("class") in ("scorecard", "controls"):
            self._table = self.raw.setdefault(a["class"], [])
        elif self._table is not None and tag == "tr":
            self._table.append([])
        elif self._table is not None and tag in ("th", "td"):
            self._cell = (tag, a.get("class", ""), a.get("title", ""), [])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[3].append(data)

    def handle_endtag(self, tag):
        if self._cell is not None and tag in ("th", "td"):
            kind, cls, title, text = self._cell
            self._table[-1].append((kind, cls, title, " ".join(" ".join(text).split())))
            self._cell = None
        elif tag == "table":
            self._table = None

    def cells(self, table: str) -> dict:
        """``{(row key, column): (class, title, text)}``; the row key is the row's header
        cells joined by "/"."""
        head, *body = self.raw[table]
        out = {}
        for row in body:
            keys = [c for c in row if c[0] == "th"]
            cols = [h[3] for h in head[len(keys):]]
            for col, (_, cls, title, text) in zip(cols, row[len(keys):]):
                out["/".join(k[3] for k in keys), col] = (cls, title, text)
        return out


def write_folder(path, verdicts: list[Verdict], results: bool = True):
    path.mkdir(parents=True, exist_ok=True)
    verdict_frame(verdicts).to_parquet(path / "verdicts.parquet", index=False)
    if results:
        pd.DataFrame({"method": ["grad_cam", "guided_backprop"], "model": "net", "image": "*", "neuron": "logit",
                      "metric": "cost_ratio", "value": [3.0, 2.0]}).to_parquet(path / "results.parquet", index=False)
    return path


EXPECTED = {  # (method, check) -> (class, text) from the hand-made verdicts
    ("grad_cam", "randomization.cascading_top"): ("v v-pass", "pass 0.31"),
    ("guided_backprop", "randomization.cascading_top"): ("v v-fail v-known", "fail known [1] 0.97"),
    ("grad_cam", "faithfulness.road"): ("v v-fail", "fail 0.012"),
    ("guided_backprop", "faithfulness.road"): ("v v-pass", "pass 0.25"),
    ("grad_cam", "stability"): ("v v-inconclusive", "inconclusive —"),
    ("guided_backprop", "stability"): ("v v-pass", "pass 0.2"),
    ("grad_cam", "conservation"): ("v v-na", "n/a —"),
    ("guided_backprop", "conservation"): ("v v-none", ""),
}


def test_scorecard_is_the_first_section_of_the_report(tmp_path):
    page = build_report(write_folder(tmp_path / "run", hand_made_verdicts())).read_text()
    parsed = Page(page)
    assert parsed.sections[0] == "scorecard" and "scores" in parsed.sections[1:]
    assert page.index('id="scorecard"') < page.index('id="scores"') < page.index('id="cost"')
    got = parsed.cells("scorecard")
    assert {k: (cls, text) for k, (cls, _, text) in got.items()} == EXPECTED
    # hover: value, threshold, controls, reason, citation
    title = got["guided_backprop", "randomization.cascading_top"][1]
    assert title == f"net: fail; value 0.97 (threshold < 0.9); controls: edge_sobel=0.998, saliency=0.21; " \
                    f"known failure: {CITE}"
    assert "every noise sample changed the prediction" in got["grad_cam", "stability"][1]
    assert f'<li value="1">{CITE}</li>' in page
    # one line per method on what it can be trusted for
    assert ("<li>grad_cam: passes randomization.cascading_top; fails faithfulness.road; inconclusive: stability; "
            "n/a: conservation</li>") in page
    assert (f"<li>guided_backprop: passes faithfulness.road, stability; fails as the literature predicts "
            f"randomization.cascading_top ({CITE})</li>") in page
    # the controls' values, one row per (model, check)
    ctl = {k: text for k, (_, _, text) in parsed.cells("controls").items()}
    assert ctl == {("net/randomization.cascading_top", "edge_sobel"): "0.998",
                   ("net/randomization.cascading_top", "saliency"): "0.21",
                   ("net/randomization.cascading_top", "random_order"): "—",
                   ("net/faithfulness.road", "edge_sobel"): "—", ("net/faithfulness.road", "saliency"): "—",
                   ("net/faithfulness.road", "random_order"): "0.004"}
    # the existing sections stay, below
    assert "Cost (ratio to one forward+backward pass)" in page
    csv = pd.read_csv(tmp_path / "run" / "table_scorecard.csv", index_col="method", keep_default_na=False)
    assert csv.to_dict("index") == {
        "grad_cam": {"randomization.cascading_top": "pass", "faithfulness.road": "fail",
                     "stability": "inconclusive", "conservation": "n/a"},
        "guided_backprop": {"randomization.cascading_top": "fail (known)", "faithfulness.road": "pass",
                            "stability": "pass", "conservation": ""}}


def test_several_models_make_one_cell_with_counts(tmp_path):
    vs = [Verdict("a", "saliency", "randomization.cascading_all", "pass", 0.1, "< 0.6"),
          Verdict("b", "saliency", "randomization.cascading_all", "fail", 0.8, "< 0.6"),
          Verdict("c", "saliency", "randomization.cascading_all", "pass", 0.2, "< 0.6")]
    page = build_report(write_folder(tmp_path / "run", vs)).read_text()
    cls, title, text = Page(page).cells("scorecard")["saliency", "randomization.cascading_all"]
    assert (cls, text) == ("v v-fail", "fail 1 of 3")
    assert title.splitlines() == ["a: pass; value 0.1 (threshold < 0.6)", "b: fail; value 0.8 (threshold < 0.6)",
                                  "c: pass; value 0.2 (threshold < 0.6)"]


def test_folder_without_verdicts_says_so_in_one_line(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    pd.DataFrame({"method": ["m"], "model": "x", "image": "0", "neuron": "logit", "metric": "cost_ratio",
                  "value": [1.0]}).to_parquet(d / "results.parquet")
    page = build_report(d).read_text()
    section = page[page.index('id="scorecard"'):page.index('id="scores"')]
    assert "No verdicts in this folder" in section and "<table" not in section
    assert not (d / "table_scorecard.csv").exists()


def test_a_verdict_file_without_statuses_is_a_clear_error(tmp_path):
    d = write_folder(tmp_path / "run", hand_made_verdicts())
    pd.read_parquet(d / "verdicts.parquet").drop(columns="status").to_parquet(d / "verdicts.parquet")
    with pytest.raises(InputError, match=r"verdict frame lacks the columns \['status'\]"):
        build_report(d)


def test_verdicts_alone_make_a_report(tmp_path):
    page = build_report(write_folder(tmp_path / "run", hand_made_verdicts(), results=False)).read_text()
    assert 'class="scorecard"' in page and "No scores were computed" in page


# ---------------------------------------------------------------------- grid runs
def grid_results(**similarity) -> pd.DataFrame:
    rows = []
    for method, value in similarity.items():
        for image, v in (("syn0", value - 0.05), ("syn1", value + 0.05)):
            rows.append((method, "net", image, "logit", "randomization_similarity", v))
            rows.append((method, "net", image, "high", "randomization_similarity", 0.99))  # not the logit
            rows.append((method, "net", image, "logit", "deletion_gain", 0.3))
    return pd.DataFrame(rows, columns=["method", "model", "image", "neuron", "metric", "value"])


def test_grid_randomization_decides_against_the_threshold():
    # randomization.cascading_all: pass below 0.6
    table = verdict_frame(grid_verdicts(grid_results(grad_cam=0.30, guided_backprop=0.85)))
    cells = table[~table["metric"].str.contains(":control:")].set_index(["method", "metric"])
    assert cells.loc[("grad_cam", "randomization.cascading_all"), "status"] == "pass"
    assert cells.loc[("grad_cam", "randomization.cascading_all"), "value"] == pytest.approx(0.30)
    assert cells.loc[("guided_backprop", "randomization.cascading_all"), "status"] == "fail"
    assert cells.loc[("guided_backprop", "randomization.cascading_all"), "threshold"] == "< 0.6"
    # faithfulness: the grid's per-image gain is not the check's estimator: it decides nothing
    faith = table[table["metric"].str.startswith("faithfulness")]
    assert set(faith["status"]) == {"inconclusive"} and faith["value"].isna().all()
    assert faith["reason"].str.contains("the estimator its threshold was set for").all()
    assert set(table["metric"]) == {"randomization.cascading_all", "faithfulness.deletion"}


def test_grid_control_rows_are_read_as_controls():
    """The grid's own control rows (``control:random``) are the localization verdict's chance."""
    rows = [(m, "net", f"syn{i}", "logit", "pointing_game", v)
            for m, v in (("grad_cam", 0.9), ("control:random", 0.3)) for i in range(2)]
    vs = grid_verdicts(pd.DataFrame(rows, columns=["method", "model", "image", "neuron", "metric", "value"]))
    pg = {v.method: v for v in vs if v.check == "localization.pointing_game"}
    assert set(pg) == {"grad_cam"}  # the control is not a subject
    assert pg["grad_cam"].value == pytest.approx(0.6) and pg["grad_cam"].controls == {"random": 0.3}


def test_grid_controls_are_used_when_the_run_has_them():
    vs = grid_verdicts(grid_results(grad_cam=0.30, saliency=0.25, edge_sobel=1.0))
    rand = {v.method: v for v in vs if v.check == "randomization.cascading_all"}
    assert set(rand) == {"grad_cam", "saliency"}  # a control is not scored itself
    assert rand["grad_cam"].controls == pytest.approx({"edge_sobel": 1.0, "saliency": 0.25})
    assert rand["grad_cam"].status == "pass"
    moved = grid_verdicts(grid_results(grad_cam=0.30, edge_sobel=0.5))
    assert [v.status for v in moved if v.check == "randomization.cascading_all"] == ["inconclusive"]


# ---------------------------------------------------------------------- suite runs
SUITE_TEST = '''
import pytest

@pytest.mark.parametrize("method", [
    "m_pass",
    "m_fail",
    pytest.param("m_xfail", marks=pytest.mark.xfail(reason="Nie et al. 2018 predict it", strict=True)),
    pytest.param("m_skip", marks=pytest.mark.skip(reason="needs a GAP head")),
])
def test_property(method, record):
    record("score", [1.0, 2.0], method=method, model="tiny")
    assert method not in ("m_fail", "m_xfail"), f"{method} broke"


@pytest.mark.parametrize("method, model", [("m_pass", "net_a"), ("m_pass", "net_b")])
def test_on_models(method, model):
    if model == "net_b":
        pytest.skip("net_b has no conv layer")


@pytest.mark.parametrize("size", [1, 2])
def test_without_a_method(size):
    pass
'''


@pytest.fixture
def fresh_record(monkeypatch):
    """The record plugin's module state, empty for an inner session (restored afterwards)."""
    for name in ("_ROWS", "_CURVES", "_AGREEMENT", "_BENCHMARKS", "_VERDICTS"):
        monkeypatch.setattr(record, name, [])
    from cnnvis_eval.testing import plugin

    monkeypatch.setattr(plugin, "_VERDICTS", [])


def test_suite_outcomes_become_verdicts_and_a_scorecard(tmp_path, monkeypatch, capsys, fresh_record):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(tmp_path)
    tests = tmp_path / "suites" / "sanity"
    tests.mkdir(parents=True)
    (tests / "test_inner.py").write_text(SUITE_TEST)
    out = tmp_path / "report"
    code = pytest.main(["-p", "suites.support.record", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                        "--cnnvis-report", str(out), str(tests / "test_inner.py")])
    stdout = capsys.readouterr().out
    assert code == pytest.ExitCode.TESTS_FAILED, stdout[-3000:]  # m_fail fails
    table = pd.read_parquet(out / "verdicts.parquet")
    got = {(r.method, r.model, r.metric): (r.status, r.known_failure, r.reason) for r in table.itertuples()}
    assert got == {
        ("m_pass", "", "sanity.test_property"): ("pass", "", ""),
        ("m_fail", "", "sanity.test_property"): ("fail", "", "AssertionError: m_fail broke"),
        ("m_xfail", "", "sanity.test_property"): ("fail", "Nie et al. 2018 predict it", "xfail"),
        ("m_skip", "", "sanity.test_property"): ("n/a", "", "needs a GAP head"),
        ("m_pass", "net_a", "sanity.test_on_models"): ("pass", "", ""),
        ("m_pass", "net_b", "sanity.test_on_models"): ("n/a", "", "net_b has no conv layer"),
    }
    results = pd.read_parquet(out / "results.parquet")  # the rows, as before (the skipped test records none)
    assert sorted(results["method"]) == ["m_fail", "m_fail", "m_pass", "m_pass", "m_xfail", "m_xfail"]
    page = (out / "index.html").read_text()
    cells = Page(page).cells("scorecard")
    assert {k: v[0] for k, v in cells.items()} == {
        ("m_pass", "sanity.test_property"): "v v-pass", ("m_pass", "sanity.test_on_models"): "v v-pass",
        ("m_fail", "sanity.test_property"): "v v-fail", ("m_fail", "sanity.test_on_models"): "v v-none",
        ("m_xfail", "sanity.test_property"): "v v-fail v-known", ("m_xfail", "sanity.test_on_models"): "v v-none",
        ("m_skip", "sanity.test_property"): "v v-na", ("m_skip", "sanity.test_on_models"): "v v-none"}
    assert cells["m_pass", "sanity.test_on_models"][2] == "pass 1 of 2"
    assert "<li>m_xfail: fails as the literature predicts sanity.test_property (Nie et al. 2018 predict it)</li>" \
        in page


def test_suite_verdicts_travel_from_xdist_workers(fresh_record):
    """A worker pickles its verdicts into ``workeroutput`` with the rows; the controller's
    ``pytest_testnodedown`` takes them over (as pytest-xdist calls the two hooks)."""
    v = Verdict("net", "grad_cam", "sanity.test_x", "pass", 0.5)  # a value: NaN != NaN
    record._VERDICTS.append(v)
    worker = SimpleNamespace(config=SimpleNamespace(workeroutput={}))
    record.pytest_sessionfinish(worker, 0)
    blob = worker.config.workeroutput[record._OUTPUT_KEY]
    record._VERDICTS.clear()
    record.pytest_testnodedown(SimpleNamespace(workeroutput={record._OUTPUT_KEY: blob}), None)
    assert record._VERDICTS == [v] and pickle.loads(blob)["verdicts"] == [v]


def test_suite_verdicts_join_those_the_plugin_wrote_in_the_same_session(tmp_path, fresh_record):
    """``pytest suites/ --cnnvis-model X --cnnvis-report DIR``: the installed plugin writes its
    verdicts first; the record plugin's file holds both.  Without ``--cnnvis-model`` a file
    left in DIR by an earlier session is not joined."""
    plugin_rows = verdict_frame([Verdict("my_model", "grad_cam", "randomization.cascading_top", "pass", 0.2)])
    plugin_rows.to_parquet(tmp_path / "verdicts.parquet", index=False)
    record._VERDICTS.append(Verdict("", "grad_cam", "sanity.test_x", "fail", reason="broke"))

    def config(models):
        return SimpleNamespace(getoption=lambda name, default=None: models if name == "--cnnvis-model" else default)

    both = record.verdicts_frame(config(["my_model.keras"]), tmp_path)
    assert list(both["metric"]) == ["randomization.cascading_top", "sanity.test_x"]
    alone = record.verdicts_frame(config([]), tmp_path)
    assert list(alone["metric"]) == ["sanity.test_x"]
