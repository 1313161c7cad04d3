"""The remedies' results table and ``cnnvis-eval remedy`` (issue 17, section 4).

Fast: the table and its HTML from a hand-written frame; the command's wiring with
:func:`~cnnvis_eval.remedy.results.evaluate` replaced by a recorder; its errors.  Slow: the
real command on a tiny configuration (32 px, 32 training images, one epoch), its numbers
against an independent recomputation.  The outcome at 64 px is in test_remedy_retrain.py (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cnnvis_eval as cv
from cnnvis_eval.cli import main
from cnnvis_eval.errors import InputError
from cnnvis_eval.data.artefacts import make_artefact_splits
from cnnvis_eval.remedy import accuracy, train_classifier
from cnnvis_eval.remedy import results
from cnnvis_eval.report import build_report, figures
from suites.support.grid_fixtures import png_size
from cnnvis_eval.remedy.results import (
    COLUMNS,
    cam_grid,
    evaluate,
    METRICS,
    SHORTCUT_TRAINING,
    results_html,
    results_table,
    sweep_table,
)

def hand_cams(n: int = 2, size: int = 16) -> dict:
    """What evaluate(cams=...) fills: n images, their artefact masks, maps of 3 models."""
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), bool)
    masks[:, 1:5, 1:5] = True
    return {"dataset": "xrays", "class_names": ("normal", "nodule", "opacity"), "labels": np.arange(n) % 3,
            "images": rng.random((n, size, size, 1), dtype=np.float32), "masks": masks,
            "maps": {name: rng.random((n, size, size), dtype=np.float32) for name in ("before", "pas", "upper_bound")}}


def size_of(path) -> tuple[int, int]:
    return png_size(Path(path).read_bytes())


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
        calls.append((dataset, remedies, dict(kw, cams=None if kw["cams"] is None else dict(kw["cams"]))))
        if kw["cams"] is not None:
            kw["cams"].update(hand_cams())
        return hand_frame()

    monkeypatch.setattr(results, "evaluate", fake)
    out = tmp_path / "rem"
    assert main(["remedy", "--dataset", "xray", "--remedies", "pas,noise", "rrr", "--out", str(out), "--quiet",
                 "--no-upper-bound", "--lam", "pas=2", "--lam", "rrr=0.5", "--seed", "3", "--sweep", "1", "3"] + TINY) == 0
    assert f"remedies: {out / 'remedies.html'}" in capsys.readouterr().out
    (dataset, remedies, kw), = calls
    assert dataset == "xray" and remedies == ["pas", "noise", "rrr"]
    assert kw == {"size": 32, "n_train": 32, "n_test": 8, "train_epochs": 1, "epochs": 1,
                  "lams": {"pas": 2.0, "rrr": 0.5}, "sweep": [1.0, 3.0], "seed": 3, "upper_bound": False, "progress": None,
                  "cams": {}, "cam_images": 3}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "remedies.parquet"), hand_frame())
    # the grid of the maps evaluate kept: 2 rows (images) x image + 3 models, embedded in the page
    assert size_of(out / "remedies_cams.png") == size_of(cam_grid(tmp_path / "want.png", hand_cams()))
    page = (out / "remedies.html").read_text()
    assert results_html(hand_frame(), [out / "remedies_cams.png"]) in page and page.count("<img") == 1
    # --cam-images 0: no maps asked for, and no earlier grid left beside the new table
    calls.clear()
    assert main(["remedy", "--out", str(out), "--quiet", "--cam-images", "0"] + TINY) == 0
    assert calls[0][2]["cams"] is None and not (out / "remedies_cams.png").exists()
    assert "<img" not in (out / "remedies.html").read_text()


def test_cli_errors(tmp_path, capsys):
    base = ["remedy", "--out", str(tmp_path), "--quiet"] + TINY
    assert main(base + ["--remedies", "magic"]) == 2
    assert capsys.readouterr().err.startswith("cnnvis-eval: error: unknown remedies ['magic']")
    assert main(base + ["--lam", "pas:3"]) == 2
    assert "--lam takes REMEDY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "remedies.parquet").exists()


def test_before_after_grid_layout(tmp_path):
    """One row per image, columns the image then each model in order, the artefact outlined."""
    import matplotlib.pyplot as plt

    cams = hand_cams(n=3)
    fig = figures.before_after_figure(cams["images"], cams["masks"], cams["maps"], row_labels=["a", "b", "c"])
    try:
        axes = np.array(fig.axes).reshape(3, 4)
        assert [ax.get_title() for ax in axes[0]] == ["image", "before", "pas", "upper_bound"]
        assert all(ax.get_title() == "" for ax in axes[1:].ravel())
        assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
        for i in range(3):  # row i shows image i (grey -> RGB) and every panel has the outline
            np.testing.assert_allclose(axes[i, 0].images[0].get_array(), np.repeat(cams["images"][i], 3, -1))
            assert all(len(ax.collections) == 1 for ax in axes[i])
    finally:
        plt.close(fig)
    # the PNG: more images -> taller, same width; more models -> wider
    one = size_of(cam_grid(tmp_path / "1.png", hand_cams(n=1)))
    three = size_of(cam_grid(tmp_path / "3.png", cams))
    fewer = dict(cams, maps={"before": cams["maps"]["before"]})
    assert three[0] == one[0] and three[1] > 2 * one[1] - 40
    assert size_of(cam_grid(tmp_path / "2col.png", fewer))[0] < three[0] * 0.7
    with pytest.raises(InputError, match="map 'pas' has shape"):
        figures.before_after_figure(cams["images"], cams["masks"], {"pas": cams["maps"]["pas"][:, :8]})


def test_report_has_the_remedies_section_when_the_folder_has_remedies(tmp_path):
    """build_report: a folder with remedies.parquet (alone, or beside a run's results) gets the
    section with its table and grid; one without it does not."""
    bare, run, alone = tmp_path / "bare", tmp_path / "run", tmp_path / "alone"
    for d in (bare, run):
        d.mkdir()
        pd.DataFrame({"method": ["cam", "cam"], "model": ["m", "m"], "image": ["i0", "i1"], "neuron": ["logit"] * 2,
                      "metric": ["sparseness"] * 2, "value": [0.1, 0.2]}).to_csv(d / "results.csv", index=False)
    for d in (run, alone):
        d.mkdir(exist_ok=True)
        hand_frame().to_parquet(d / "remedies.parquet", index=False)
        cam_grid(d / "remedies_cams.png", hand_cams())
    page = build_report(bare).read_text()
    assert 'id="remedies"' not in page and 'href="#remedies"' not in page
    for d in (run, alone):
        page = build_report(d).read_text()
        assert page.count('<section id="remedies">') == 1 and 'href="#remedies"' in page
        assert "<th>pas</th>" in page and "Lambda curves" in page
        section = page[page.index('<section id="remedies">'):]
        assert section.count('<img src="data:image/png;base64,') == 1
    assert page.index('id="remedies"') < page.index('id="config"')
    with pytest.raises(InputError, match="remedies.parquet"):
        build_report(tmp_path / "empty")


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
    # the grid: 3 swapped test images x (image, before, pas, noise), equal in size to one drawn from
    # evaluate's kept maps; the "before" maps are the true-class CAMs of the shortcut model
    cams = {}
    evaluate("symbol", ["pas", "noise"], size=32, n_train=32, n_test=8, train_epochs=1, epochs=1, upper_bound=False,
             cams=cams, cam_images=3)
    assert list(cams["maps"]) == ["before", "pas", "noise"]
    assert all(m.shape == (3, 32, 32) for m in cams["maps"].values())
    swapped = splits["test_swapped"]
    np.testing.assert_array_equal(cams["labels"], swapped.y[:3])
    assert (swapped.artefact_classes[:3] != swapped.y[:3]).all()
    want = cv.explain("cam", short, swapped.x[:3], target=cv.ClassTarget(list(map(int, swapped.y[:3])))).heatmap
    np.testing.assert_allclose(cams["maps"]["before"], want, rtol=1e-4, atol=1e-6)
    assert size_of(out / "remedies_cams.png") == size_of(cam_grid(tmp_path / "g.png", cams))
