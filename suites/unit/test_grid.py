"""The comparison grid: resumable storage, not-applicable and failing cells, the long frame.

Runs use two small saved 32 px models (``suites/support/grid_fixtures.py``: one with a
global-average-pooling head, one with a Flatten head) and three images, so a run takes
seconds.  Interruptions are real: a ``KeyboardInterrupt`` raised inside the N-th cell
escapes the run as Ctrl-C would.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cnnvis_eval
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation import NEURONS, GridRun, ProcessExecutor, RunConfig
from cnnvis_eval.targets import NeuronTarget
from suites.support.grid_fixtures import (RUN_METHODS, cell_file, save_model, stored_cells, strip_timing,
                                          tiny_config, tiny_run)

REAL_EXPLAIN = cnnvis_eval.explain


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The shared tiny run, uninterrupted: (folder, config, results)."""
    out, cfg = tiny_run(tmp_path_factory)
    return out, cfg, pd.read_parquet(out / "results.parquet")


class ExplainSpy:
    """Replaces ``cnnvis_eval.explain``: logs each cell the grid starts; can interrupt or fail.

    The grid explains a cell as two calls (the first image, which traces, then the rest), so
    a cell starts with a call on one image; it is logged as (model, method, neuron kind).
    ``interrupt_at=k`` raises KeyboardInterrupt when the k-th cell (1-based) starts; ``fail``
    maps (method, neuron kind) to an exception raised for that cell on every model.
    """

    def __init__(self, monkeypatch, interrupt_at=None, fail=None):
        self.started: list[tuple[str, str, str]] = []
        self.interrupt_at, self.fail = interrupt_at, fail or {}
        monkeypatch.setattr(cnnvis_eval, "explain", self)

    def __call__(self, method, model, x, target=None, **kw):
        kind = "logit"  # ClassTarget; a NeuronTarget is on the mid or the high layer
        if isinstance(target, NeuronTarget):
            kind = NEURONS[1 + list(model.intermediate_layers).index(target.layer)]
        if len(x) == 1:
            self.started.append((model.name, method, kind))
            if self.interrupt_at is not None and len(self.started) == self.interrupt_at:
                raise KeyboardInterrupt
        if (method, kind) in self.fail:
            raise self.fail[(method, kind)]
        return REAL_EXPLAIN(method, model, x, target=target, **kw)


def mtimes(root) -> dict:
    return {p.relative_to(root): p.stat().st_mtime_ns for p in (root / "rows").rglob("*.parquet")}


def test_interrupted_run_resumes_without_recomputing(tmp_path, full_run, monkeypatch):
    full_dir, cfg, full = full_run
    everything = stored_cells(full_dir)
    n_first_model = len(cfg.methods) * len(NEURONS)

    # interrupted in the second model's 3rd cell: the first model is complete (cells and
    # stage rows), two cells of the second are stored, nothing is assembled yet
    root = tmp_path / "resumed"
    spy = ExplainSpy(monkeypatch, interrupt_at=n_first_model + 3)
    with pytest.raises(KeyboardInterrupt):
        GridRun(cfg, root, progress=False, log=None).run()
    first = stored_cells(root)
    assert {c for c in first if c[0] == "flat_cnn"} == {("flat_cnn", "saliency", "logit"),
                                                         ("flat_cnn", "saliency", "mid")}
    assert {c for c in first if c[0] == "gap_cnn"} == {c for c in everything if c[0] == "gap_cnn"}
    assert not (root / "results.parquet").exists()
    assert not list(root.rglob("*.tmp")), "a write was left half-done"
    rows_before = mtimes(root)
    assert {p.parts[1] for p in rows_before} >= {"scores", "randomization", "agreement", "reference"}

    # the same configuration resumes: stored cells and stage rows are not computed again
    spy = ExplainSpy(monkeypatch)
    resumed = GridRun(cfg, root, progress=False, log=None).run()
    again = set(spy.started)
    assert not again & first, f"stored cells explained again: {sorted(again & first)}"
    assert again >= everything - first
    assert all(m == "flat_cnn" for m, _, _ in again)  # including n/a cells: remembered as such
    assert stored_cells(root) == everything
    assert {p: t for p, t in mtimes(root).items() if p in rows_before} == rows_before

    # the result equals the uninterrupted run's (wall-time measurements aside)
    pd.testing.assert_frame_equal(strip_timing(resumed), strip_timing(full), rtol=1e-5, atol=1e-6)
    for model, m, n in everything:
        a = np.load(cell_file(root, model, m, n))["heatmap"]
        b = np.load(cell_file(full_dir, model, m, n))["heatmap"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"{model}/{m}/{n}")
    curves = [pd.read_parquet(d / "curves.parquet").sort_values(["method", "model", "image", "step", "metric"])
              .reset_index(drop=True) for d in (root, full_dir)]
    pd.testing.assert_frame_equal(*curves, rtol=1e-5, atol=1e-6)

    # a finished run resumed once more explains nothing and rewrites no stage rows
    rows = mtimes(root)
    spy = ExplainSpy(monkeypatch)
    third = GridRun(cfg, root, progress=False, log=None).run()
    assert spy.started == []
    assert mtimes(root) == rows
    pd.testing.assert_frame_equal(strip_timing(third), strip_timing(resumed))


def test_other_configuration_in_the_same_folder_is_refused(tmp_path, full_run):
    _, cfg, _ = full_run
    GridRun(cfg, tmp_path / "run", progress=False, log=None)  # writes config.json, runs nothing
    GridRun(cfg, tmp_path / "run", progress=False, log=None)  # same configuration: resumable
    other = tiny_config(tmp_path / "m", synthetic=5)
    with pytest.raises(InputError, match="another configuration"):
        GridRun(other, tmp_path / "run", progress=False, log=None)


def test_cam_not_applicable_cells(full_run):
    """CAM on a Flatten + Dense head (no GAP), and CAM on intermediate neurons: n/a, not a crash."""
    root, _, results = full_run
    cells = pd.read_parquet(root / "cells.parquet").set_index(["model", "method", "neuron"]).sort_index()
    flat = cells.loc[("flat_cnn", "cam")]
    assert (flat["status"] == "n/a").all()
    assert flat.loc["logit", "message"].startswith("cam needs a classifier head of global average pooling")
    assert "flat_cnn" in flat.loc["logit", "message"]
    assert cells.loc[("gap_cnn", "cam", "logit"), "status"] == "ok"
    gap = cells.loc[("gap_cnn", "cam")]
    assert set(gap.loc[["mid", "high"], "status"]) == {"n/a"}
    assert "NeuronTarget" in gap.loc["mid", "message"]
    others = cells.drop(index="cam", level="method")
    assert (others["status"] == "ok").all()
    # n/a cells store no heatmap (only their reason) and contribute no rows
    assert cell_file(root, "flat_cnn", "cam", "logit") is None
    assert cell_file(root, "flat_cnn", "cam", "logit", ".na.txt").read_text() == flat.loc["logit", "message"]
    assert results[(results["model"] == "flat_cnn") & (results["method"] == "cam")].empty
    assert not results[(results["model"] == "gap_cnn") & (results["method"] == "cam")].empty


def test_cam_on_the_vgg_mini_model_is_not_applicable(tmp_path):
    """The study's case on a committed mini model: VGG's head has no global average pooling."""
    cfg = RunConfig(models=("mini_vgg",), methods=("cam",), photos=("chelsea",), scenes=0, birds=0, synthetic=0, stages=())
    GridRun(cfg, tmp_path, progress=False, log=None).run()
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    assert (cells["status"] == "n/a").all() and len(cells) == 3
    assert "mini_vgg" in cells["message"].iloc[0] and "grad_cam" in cells["message"].iloc[0]


def test_failing_cell_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "models", methods=("saliency", "grad_cam"), stages=("complexity", "agreement"))
    ExplainSpy(monkeypatch, fail={("grad_cam", "logit"): RuntimeError("boom: simulated failure")})
    results = GridRun(cfg, tmp_path / "run", progress=False, log=None).run()
    cells = pd.read_parquet(tmp_path / "run" / "cells.parquet")
    bad = cells[cells["status"] == "error"]
    assert set(zip(bad["model"], bad["method"], bad["neuron"])) == {
        ("gap_cnn", "grad_cam", "logit"), ("flat_cnn", "grad_cam", "logit")}
    assert (bad["message"] == "RuntimeError: boom: simulated failure").all()
    ok = cells[cells["status"] == "ok"]
    assert len(ok) == len(cells) - 2 == 2 * 2 * len(NEURONS) - 2
    # everything else was scored, on both models: the failure did not stop the run
    scored = set(zip(results["model"], results["method"], results["neuron"]))
    assert scored == set(zip(ok["model"], ok["method"], ok["neuron"]))
    # a failed cell is not stored, so running again retries it
    assert cell_file(tmp_path / "run", "gap_cnn", "grad_cam", "logit") is None
    assert cell_file(tmp_path / "run", "gap_cnn", "saliency", "logit") is not None
    # ... and the report lists it with its message
    from cnnvis_eval.report import build_report

    page = build_report(tmp_path / "run").read_text()
    assert "RuntimeError: boom: simulated failure" in page
    # the next run explains the failed cells and scores them too (not only the stored scores)
    monkeypatch.undo()
    ExplainSpy(monkeypatch)
    again = GridRun(cfg, tmp_path / "run", progress=False, log=None).run()
    assert (pd.read_parquet(tmp_path / "run" / "cells.parquet")["status"] == "ok").all()
    rescored = set(zip(again["model"], again["method"], again["neuron"]))
    assert {("gap_cnn", "grad_cam", "logit"), ("flat_cnn", "grad_cam", "logit")} <= rescored
    assert scored < rescored


class TargetsSpy:
    """Replaces ``cnnvis_eval.explain_targets``: logs (model, method, targets, images) of
    each call; ``fail`` raises it on every call."""

    def __init__(self, monkeypatch, fail=None):
        self.calls: list[tuple[str, str, int, int]] = []
        self.fail = fail
        self.real = cnnvis_eval.explain_targets
        monkeypatch.setattr(cnnvis_eval, "explain_targets", self)

    def __call__(self, method, model, x, targets, **kw):
        self.calls.append((model.name, method, len(targets), len(x)))
        if self.fail is not None:
            raise self.fail
        return self.real(method, model, x, targets, **kw)


def _cell(root, model, method, neuron):
    with np.load(cell_file(root, model, method, neuron)) as z:
        return {k: z[k] for k in ("heatmap", "indices", "scores", "seconds", "seconds_per_image")}


def test_perturbation_cells_of_a_model_are_one_pass(tmp_path, monkeypatch):
    """Occlusion's three neurons of a model are explained by one explain_targets call per
    explain half (the first image, then the rest): the cells equal those of a run that
    explains each neuron alone, bit for bit, and carry the joint pass's seconds; saliency
    is explained neuron by neuron.  A cell missing later is explained alone; a failing
    joint call falls back to one call per neuron, so each cell gets its own status."""
    import cnnvis_eval.evaluation.runner as runner

    cfg = tiny_config(tmp_path / "models", methods=("saliency", "occlusion"), stages=("complexity",))
    spy = TargetsSpy(monkeypatch)
    GridRun(cfg, tmp_path / "joint", progress=False, log=None).run()
    models = ("gap_cnn", "flat_cnn")
    assert sorted(spy.calls) == sorted((m, "occlusion", 3, n) for m in models for n in (1, 2))
    monkeypatch.setattr(runner, "joint_targets", lambda method: False)
    GridRun(cfg, tmp_path / "alone", progress=False, log=None).run()
    assert len(spy.calls) == 4  # no joint call when the grid explains one neuron at a time
    for m in models:
        for neuron in NEURONS:
            for method in ("saliency", "occlusion"):
                joint, alone = _cell(tmp_path / "joint", m, method, neuron), _cell(tmp_path / "alone", m, method, neuron)
                for k in ("heatmap", "indices", "scores"):
                    np.testing.assert_array_equal(joint[k], alone[k], err_msg=f"{m} {method} {neuron} {k}")
        occ = [_cell(tmp_path / "joint", m, "occlusion", n) for n in NEURONS]
        assert len({float(c["seconds"]) for c in occ}) == 1 and len({float(c["seconds_per_image"]) for c in occ}) == 1
    monkeypatch.undo()

    # the mid cell lost: the next run explains it alone (explain, not explain_targets)
    cell_file(tmp_path / "joint", "gap_cnn", "occlusion", "mid").unlink()
    spy, cells = TargetsSpy(monkeypatch), ExplainSpy(monkeypatch)
    GridRun(cfg, tmp_path / "joint", progress=False, log=None).run()
    assert spy.calls == [] and cells.started == [("gap_cnn", "occlusion", "mid")]
    monkeypatch.undo()

    # the joint call fails: each neuron alone, the failing one recorded, the others stored
    TargetsSpy(monkeypatch, fail=RuntimeError("joint pass lost"))
    ExplainSpy(monkeypatch, fail={("occlusion", "high"): RuntimeError("boom: high only")})
    GridRun(cfg, tmp_path / "fallback", progress=False, log=None).run()
    cells = pd.read_parquet(tmp_path / "fallback" / "cells.parquet")
    occ = cells[cells["method"] == "occlusion"].set_index(["model", "neuron"])
    for m in models:
        assert occ.loc[(m, "high"), "status"] == "error"
        assert occ.loc[(m, "high"), "message"] == "RuntimeError: boom: high only"
        assert (occ.loc[[(m, "logit"), (m, "mid")], "status"] == "ok").all()
        np.testing.assert_array_equal(_cell(tmp_path / "fallback", m, "occlusion", "mid")["heatmap"],
                                      _cell(tmp_path / "alone", m, "occlusion", "mid")["heatmap"])


def test_unreadable_model_file_is_recorded_and_other_models_run(tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    cfg = tiny_config(tmp_path / "models", methods=("saliency",), stages=("complexity",))
    cfg.model_files = (str(broken), save_model("gap_cnn", tmp_path / "models").as_posix())
    results = GridRun(cfg, tmp_path / "run", progress=False, log=None).run()
    cells = pd.read_parquet(tmp_path / "run" / "cells.parquet")
    row = cells[cells["model"] == f"file:{broken}"].iloc[0]
    assert row["status"] == "error" and "not a .keras zip archive" in row["message"]
    assert set(results["model"]) == {"gap_cnn"}


def test_a_run_whose_models_all_fail_to_load_is_an_error(tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    cfg = tiny_config(tmp_path / "models", methods=("saliency",), stages=("complexity",))
    cfg.model_files = (str(broken),)
    with pytest.raises(InputError, match="no model of the run could be loaded: file:.*broken.keras.*zip archive"):
        GridRun(cfg, tmp_path / "run", progress=False, log=None).run()


def test_long_frame_and_stored_files(full_run):
    root, cfg, results = full_run
    assert list(results.columns) == ["method", "model", "image", "neuron", "metric", "value"]
    csv = pd.read_csv(root / "results.csv")
    assert list(csv.columns) == list(results.columns) and len(csv) == len(results)
    np.testing.assert_allclose(csv["value"].to_numpy(), results["value"].to_numpy(), rtol=1e-12)
    assert {"pointing_game", "relevance_mass_accuracy", "deletion_gain", "insertion_gain", "sparseness",
            "agreement", "randomization_similarity", "cost_ratio"} <= set(results["metric"])
    # localization only on the synthetic images (the photo has no mask), for the logit neuron
    loc = results[results["metric"] == "pointing_game"]
    assert set(loc["image"]) == {"syn000", "syn001"} and set(loc["neuron"]) == {"logit"}
    assert loc["value"].between(0, 1).all()  # 1 hit, 0 miss (a fraction when the maximum is tied)
    # one heatmap file per (model, method, neuron) that applies: float32 at input size
    for model, method, neuron in stored_cells(root):
        z = np.load(cell_file(root, model, method, neuron))
        assert z["heatmap"].dtype == np.float32 and z["heatmap"].shape == (3, 32, 32)
        assert np.isfinite(z["heatmap"]).all() and len(z["indices"]) == 3
    assert len(stored_cells(root)) == 2 * len(RUN_METHODS) * len(NEURONS) - 5  # five CAM cells are n/a
    stored = json.loads((root / "config.json").read_text())
    assert stored["config"]["methods"] == list(RUN_METHODS) and "tensorflow" in stored["versions"]
    # cost ratio = warm seconds per image / one plain forward+backward pass per image
    ref = pd.read_parquet(root / "reference.parquet").set_index("model")["forward_backward_seconds_per_image"]
    cost = results[results["metric"] == "cost_ratio"].set_index(["method", "model"])["value"].sort_index()
    spi = results[results["metric"] == "seconds_per_image"].set_index(["method", "model"])["value"].sort_index()
    np.testing.assert_allclose(cost, spi / ref.loc[spi.index.get_level_values("model")].to_numpy(), rtol=1e-12)


def test_agreement_matches_the_metric(full_run):
    """The grid's agreement rows and matrices equal agreement_matrix / the spearman_abs
    metric recomputed from the stored heatmaps."""
    from cnnvis_eval.metrics import agreement_matrix, get_metric

    root, _, results = full_run
    stored = pd.read_parquet(root / "agreement.parquet")
    for (model, neuron), g in stored.groupby(["model", "neuron"]):
        methods = list(dict.fromkeys(g["method_a"]))
        maps = {m: np.load(cell_file(root, model, m, neuron))["heatmap"] for m in methods}
        expected = agreement_matrix(maps, "spearman_abs")
        got = g.pivot(index="method_a", columns="method_b", values="value").loc[methods, methods]
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-10, atol=1e-12)
        metric = get_metric("spearman_abs")()
        for m in methods:
            per_image = np.mean([metric.evaluate(maps[m], maps[o]) for o in methods if o != m], axis=0)
            rows = results[(results["model"] == model) & (results["neuron"] == neuron)
                           & (results["method"] == m) & (results["metric"] == "agreement")]
            np.testing.assert_allclose(rows["value"].to_numpy(), per_image, rtol=1e-10)


@pytest.mark.parametrize("workers", [
    pytest.param(1, id="one-worker-process"),
    pytest.param(2, id="two-worker-processes", marks=pytest.mark.slow),
])
def test_worker_processes_give_the_same_results(tmp_path, monkeypatch, workers):
    """The work split into tasks for spawned worker processes (the CLI's default, one per
    core): the same cells and results as in-process, and the progress bar counts every cell
    (progress comes back through a queue).  By default one worker process does all tasks
    (starting one costs a TensorFlow import); ``-m slow`` runs two at once."""
    import cnnvis_eval.evaluation.runner as runner

    cfg = tiny_config(tmp_path / "models", methods=("saliency", "cam"),
                      stages=("complexity", "agreement", "randomization"), randomization_steps=1)
    inproc = GridRun(cfg, tmp_path / "inproc", progress=False, log=None, workers=1).run()
    ticks = {"cells": [], "scores": []}

    class Bar:  # records the progress of each bar
        def __init__(self, total, desc, **kw):
            self.total, self.desc = total, desc

        def update(self, n=1):
            ticks[self.desc].append(n)

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    monkeypatch.setattr(runner, "tqdm", Bar)
    if workers == 1:  # workers=1 would stay in-process
        run = GridRun(cfg, tmp_path / "workers", progress=True, log=None, executor=ProcessExecutor(1))
    else:
        run = GridRun(cfg, tmp_path / "workers", progress=True, log=None, workers=workers)
    results = run.run()
    assert sum(ticks["cells"]) == 2 * len(cfg.methods) * len(NEURONS)
    # per model one score task; the randomization curves run in the explain tasks (with their explainers)
    assert sum(ticks["scores"]) == 2
    pd.testing.assert_frame_equal(strip_timing(results), strip_timing(inproc), rtol=1e-5, atol=1e-6)
    assert stored_cells(tmp_path / "workers") == stored_cells(tmp_path / "inproc")
    cols = ["model", "method", "neuron", "layer", "status", "message", "indices"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "workers" / "cells.parquet")[cols],
                                  pd.read_parquet(tmp_path / "inproc" / "cells.parquet")[cols])


def test_z_plus_presets_start_randomization_from_the_signed_logit(tmp_path, monkeypatch):
    """With ``positive_top`` a randomized model whose logit turns negative gives an all-zero
    z+ map, scored as "dissimilar" for that reason alone; the grid's randomization stage runs
    the z+ presets with ``positive_top=False`` (as suites/sanity/test_randomization.py does)
    and leaves the other methods' parameters alone."""
    import cnnvis_eval.metrics as metrics

    seen, real = {}, metrics.randomization_curve

    def spy(spec, x, factory, target, **kw):  # the stage passes a factory of its cached explainer
        ex = factory(spec)
        seen[ex.name] = ex.positive_top
        return real(spec, x, factory, target, **kw)

    monkeypatch.setattr(metrics, "randomization_curve", spy)
    cfg = tiny_config(tmp_path / "models", methods=("deep_taylor", "lrp_alpha1beta0", "lrp_epsilon"),
                      stages=("randomization",), randomization_steps=1)
    cfg.model_files = cfg.model_files[:1]  # the GAP model (its Rescaling layer passes relevance on)
    results = GridRun(cfg, tmp_path / "run", progress=False, log=None).run()
    from cnnvis_eval.methods.base import get_method

    assert get_method("deep_taylor").positive_top and get_method("lrp_alpha1beta0").positive_top  # the override shows
    assert seen == {"deep_taylor": False, "lrp_alpha1beta0": False, "lrp_epsilon": get_method("lrp_epsilon").positive_top}
    sim = results[results["metric"] == "randomization_similarity"]
    assert set(sim["method"]) == set(seen) and np.isfinite(sim["value"]).all()


def test_randomization_starts_from_the_stored_cell(tmp_path, monkeypatch):
    """Step 0 of a curve is the stored logit cell (its maps of the stage's images, its
    classes) when the stage explains with the cell's own parameters -- one explanation of
    the images less per curve -- and the curve equals the one that explains step 0 again;
    the z+ presets, explained with other parameters here, still explain it."""
    import cnnvis_eval.metrics as metrics

    given, real = {}, metrics.randomization_curve

    def spy(spec, x, factory, target, **kw):
        name = factory(spec).name
        given[name] = kw.get("original")
        curve = real(spec, x, factory, target, **kw)
        if kw.get("original") is not None:
            again = real(spec, x, factory, target, **{**kw, "original": None})
            np.testing.assert_allclose(curve["value"].to_numpy(), again["value"].to_numpy(), atol=1e-6)
        return curve

    monkeypatch.setattr(metrics, "randomization_curve", spy)
    cfg = tiny_config(tmp_path / "models", methods=("deep_taylor", "saliency", "occlusion"),
                      stages=("randomization",), randomization_steps=1)
    cfg.model_files = cfg.model_files[:1]
    GridRun(cfg, tmp_path / "run", progress=False, log=None).run()
    assert given["deep_taylor"] is None  # positive_top=False here: not the cell's explainer
    for method in ("saliency", "occlusion"):
        exp = given[method]
        assert exp is not None and len(exp) == cfg.randomization_images
        cells = pd.read_parquet(tmp_path / "run" / "cells.parquet")
        row = cells[(cells["method"] == method) & (cells["neuron"] == "logit")].iloc[0]
        with np.load(tmp_path / "run" / row["file"]) as z:
            stored = z["heatmap"]
        # the stage's images are rows of the stored cell, and its classes the cell's
        assert all(any(np.array_equal(h, s) for s in stored) for h in exp.heatmap)


def test_a_full_size_architecture_with_random_weights(tmp_path):
    """The grid on a big architecture (MobileNetV2, random weights, at 64 px): every cell
    runs, the intermediate neurons are the architecture's two named layers, CAM is n/a
    on them, heatmaps come back at the input size."""
    from cnnvis_eval.evaluation import load_spec

    cfg = RunConfig(models=("mobilenet_v2",), methods=("saliency", "grad_cam", "cam"), photos=(),
                    scenes=0, birds=0, synthetic=1, input_size=64, stages=("localization",))
    results = GridRun(cfg, tmp_path, progress=False, log=None, workers=1).run()
    cells = pd.read_parquet(tmp_path / "cells.parquet").set_index(["method", "neuron"])
    spec = load_spec("mobilenet_v2", cfg)
    assert spec.input_shape[:2] == (64, 64)
    na = {("cam", "mid"), ("cam", "high")}
    assert set(cells.index[cells["status"] == "n/a"]) == na
    assert (cells.drop(index=list(na))["status"] == "ok").all()
    for method in ("saliency", "grad_cam"):
        assert [cells.at[(method, n), "layer"] for n in ("mid", "high")] == list(spec.intermediate_layers)
        with np.load(cell_file(tmp_path, "mobilenet_v2", method, "high")) as z:
            assert z["heatmap"].shape == (1, 64, 64) and np.isfinite(z["heatmap"]).all()
    pg = results[results["metric"] == "pointing_game"]
    # the methods, and the model-blind controls scored beside them (not methods: no cells)
    assert set(pg["method"]) == set(cfg.methods) | {"control:edge_sobel", "control:random"}
    assert set(pg["image"]) == {"syn000"}


def test_stages_are_data():
    """The scores' directions come from the metric classes; the z+ override applies to the
    presets with ``positive_top`` only, and never over a parameter the run sets."""
    from cnnvis_eval.evaluation.stages import RANDOMIZATION, SCORES
    from cnnvis_eval.metrics import get_metric

    assert {s.metric: s.higher_is_better for s in SCORES} == {
        s.metric: get_metric(s.metric).higher_is_better for s in SCORES}
    assert {s.metric for s in SCORES if s.needs_masks} == {
        "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "energy_pointing_game"}
    assert RANDOMIZATION.params("deep_taylor", {}) == {"positive_top": False}
    assert RANDOMIZATION.params("deep_taylor", {"positive_top": True}) == {"positive_top": True}
    assert RANDOMIZATION.params("lrp_epsilon", {"epsilon": 1.0}) == {"epsilon": 1.0}


class _SerialPhases:
    """An executor running the worker phases one task at a time in this process, recording
    the tasks (the phases a process pool runs, without the processes)."""

    in_process = False
    remote = False

    def __init__(self):
        self.tasks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def map(self, fn, tasks, tick=lambda n: None, on_done=lambda n: None):
        out = []
        for task in tasks:
            self.tasks.append(task)
            out.append(fn(*task, tick=tick))
            on_done(1)
        return out


def test_scoring_starts_with_the_models_whose_cells_took_longest(tmp_path):
    """The score phase is the end of the run's parallel part: its tasks go out longest first
    (by the seconds of the model's cells), so that no long task starts while the other
    workers have nothing left."""
    cfg = tiny_config(tmp_path / "models", methods=("saliency", "occlusion"), stages=("localization",))
    cfg.model_files = cfg.model_files[::-1]  # the Flatten-head model first
    ex = _SerialPhases()
    run = GridRun(cfg, tmp_path / "run", progress=False, log=None, executor=ex)
    run.run()
    scored = [run.names[str(t[2])] for t in ex.tasks if t[4] == ("score",)]
    cells = pd.read_parquet(tmp_path / "run" / "cells.parquet")
    spent = cells[cells["status"] == "ok"].groupby("model")["seconds"].sum()
    assert sorted(scored) == sorted(spent.index) and list(spent[scored]) == sorted(spent, reverse=True)


def test_heaviest_first_orders_by_the_seconds_of_ok_cells():
    from cnnvis_eval.evaluation.runner import heaviest_first

    rows = [{"model": "a", "status": "ok", "seconds": 1.0}, {"model": "b", "status": "ok", "seconds": 2.0},
            {"model": "a", "status": "ok", "seconds": 1.5}, {"model": "c", "status": "n/a", "seconds": np.nan},
            {"model": "b", "status": "error", "seconds": 9.0}, {"model": "c", "status": "ok", "seconds": None}]
    names = {"src_a": "a", "src_b": "b", "src_c": "c"}
    assert heaviest_first(["src_c", "src_b", "src_a"], rows, names) == ["src_a", "src_b", "src_c"]
    assert heaviest_first(["src_c"], rows, names) == ["src_c"]
