"""The remedies' results table and ``cnnvis-eval remedy`` (issue 17, section 4).

Fast: the table and its HTML from a hand-written frame; the command's wiring with
:func:`~cnnvis_eval.remedy.results.evaluate` replaced by a recorder; its errors.  Slow: the
real command on a tiny configuration (32 px, 32 training images, one epoch), its numbers
against an independent recomputation.  The outcome at 64 px is in test_remedy_retrain.py (slow).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval.cli import main
from cnnvis_eval.data.artefacts import make_artefact_splits
from cnnvis_eval.remedy import accuracy, train_classifier
from cnnvis_eval.remedy import results
from cnnvis_eval.remedy.results import (
    COLUMNS,
    METRICS,
    SHORTCUT_TRAINING,
    results_html,
    results_table,
    sweep_table,
)

TINY = ["--size", "32", "--n-train", "32", "--n-test", "8", "--train-epochs", "1", "--epochs", "1"]


def hand_frame() -> pd.DataFrame:
    rows = []
    for remedy, after in (("pas", 0.8), ("upper_bound", 0.9)):
        lam = 3.0 if remedy == "pas" else np.nan
        for stage, value in (("before", 0.1), ("after", after)):
            for metric in ("swapped_accuracy", "cam_mass"):
                rows.append(("xrays", remedy, stage, lam, metric, value if metric != "cam_mass" else 1 - value))
    for lam, acc in ((1.0, 0.4), (3.0, 0.7)):
        rows += [("xrays", "pas", "sweep", lam, "val_accuracy", acc), ("xrays", "pas", "sweep", lam, "val_share", 0.1)]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_results_table_and_html():
    table = results_table(hand_frame())
    assert list(table.index) == [("xrays", "(before)"), ("xrays", "pas"), ("xrays", "upper_bound")]
    assert list(table.columns) == ["swapped_accuracy", "cam_mass"]  # in METRICS order
    np.testing.assert_allclose(table["swapped_accuracy"], [0.1, 0.8, 0.9])
    np.testing.assert_allclose(table["cam_mass"], [0.9, 0.2, 0.1])
    curves = sweep_table(hand_frame())
    assert list(curves.index) == [("xrays", "pas", 1.0), ("xrays", "pas", 3.0)]
    np.testing.assert_allclose(curves["val_accuracy"], [0.4, 0.7])
    page = results_html(hand_frame())
    assert page.startswith('<section id="remedies">') and page.count("<td>") == 6 + 4
    assert "<th>upper_bound</th>" in page and "Lambda curves" in page
    assert "Lambda curves" not in results_html(hand_frame().query("stage != 'sweep'"))


def test_cli_passes_options_and_writes_files(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(dataset, remedies, **kw):
        calls.append((dataset, remedies, kw))
        return hand_frame()

    monkeypatch.setattr(results, "evaluate", fake)
    out = tmp_path / "rem"
    assert main(["remedy", "--dataset", "xray", "--remedies", "pas,noise", "rrr", "--out", str(out), "--quiet",
                 "--no-upper-bound", "--lam", "pas=2", "--lam", "rrr=0.5", "--seed", "3", "--sweep", "1", "3"] + TINY) == 0
    assert f"remedies: {out / 'remedies.html'}" in capsys.readouterr().out
    (dataset, remedies, kw), = calls
    assert dataset == "xray" and remedies == ["pas", "noise", "rrr"]
    assert kw == {"size": 32, "n_train": 32, "n_test": 8, "train_epochs": 1, "epochs": 1,
                  "lams": {"pas": 2.0, "rrr": 0.5}, "sweep": [1.0, 3.0], "seed": 3, "upper_bound": False, "progress": None}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "remedies.parquet"), hand_frame())
    assert results_html(hand_frame()) in (out / "remedies.html").read_text()


def test_cli_errors(tmp_path, capsys):
    base = ["remedy", "--out", str(tmp_path), "--quiet"] + TINY
    assert main(base + ["--remedies", "magic"]) == 2
    assert capsys.readouterr().err.startswith("cnnvis-eval: error: unknown remedies ['magic']")
    assert main(base + ["--lam", "pas:3"]) == 2
    assert "--lam takes REMEDY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "remedies.parquet").exists()


@pytest.mark.slow
def test_cli_runs_for_real(tmp_path, capsys):
    out = tmp_path / "rem"
    assert main(["remedy", "--dataset", "symbol", "--remedies", "pas,noise", "--out", str(out), "--quiet",
                 "--no-upper-bound", "--sweep", "0", "2"] + TINY) == 0
    assert f"remedies: {out / 'remedies.html'}" in capsys.readouterr().out
    frame = pd.read_parquet(out / "remedies.parquet")
    assert list(frame.columns) == COLUMNS
    assert set(frame["dataset"]) == {"symbols"} and set(frame["remedy"]) == {"pas", "noise"}
    for (remedy, stage), g in frame[frame["stage"] != "sweep"].groupby(["remedy", "stage"]):
        assert sorted(g["metric"]) == sorted(METRICS), (remedy, stage)
    # pas: lambda chosen on the curve (the first best validation accuracy); noise has none
    curve = frame[frame["stage"] == "sweep"].pivot_table(index="lam", columns="metric", values="value")
    assert list(curve.index) == [0.0, 2.0] and set(frame.loc[frame["stage"] == "sweep", "remedy"]) == {"pas"}
    chosen = frame.loc[(frame["remedy"] == "pas") & (frame["stage"] == "after"), "lam"].unique()
    assert list(chosen) == [curve["val_accuracy"].idxmax()]
    assert frame.loc[frame["remedy"] == "noise", "lam"].isna().all()
    acc = frame[frame["metric"].str.endswith("accuracy")]["value"]
    assert acc.between(0, 1).all()
    # "before" is the one shortcut model: the same numbers in every remedy's rows (times aside)
    before = frame[(frame["stage"] == "before") & (frame["metric"] != "train_seconds")]
    assert before.groupby("metric")["value"].nunique().eq(1).all()
    # ... and it is the model train_classifier gives for these data and seed
    splits = make_artefact_splits("symbols", 32, 8, 8, correlation=1.0, size=32, seed=0)
    short = train_classifier(splits["train"].x, splits["train"].y, seed=0, epochs=1, **SHORTCUT_TRAINING)
    want = accuracy(short, splits["test_swapped"].x, splits["test_swapped"].y)
    got = before.loc[before["metric"] == "swapped_accuracy", "value"].iloc[0]
    assert got == want
    table = results_table(frame)
    assert list(table.index.get_level_values("remedy")) == ["(before)", "pas", "noise"]
    page = (out / "remedies.html").read_text()
    assert "<section id=\"remedies\">" in page and page.count("<th>pas</th>") == 1
    assert np.isfinite(table.to_numpy()).all()
