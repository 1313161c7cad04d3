"""A run folder that never lies (issue 14, items 1-3): results keyed by the model's content,
display names unique within a run, every stored file verified when read.

Runs are tiny: the 32 px GAP model of ``suites/support/grid_fixtures.py`` saved as files,
saliency only, two synthetic images, the complexity stage.  Expected heatmaps are computed
directly with :func:`cnnvis_eval.explain` on the model loaded from the file, independently
of the run folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cnnvis_eval
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation import GridRun, RunConfig
from cnnvis_eval.models.files import load_model_file
from cnnvis_eval.targets import ClassTarget
from suites.support.grid_fixtures import BUILDERS, cell_file, strip_timing

REAL_EXPLAIN = cnnvis_eval.explain


def save_gap(path: Path, scale: float = 1.0) -> Path:
    """The GAP model with its weights times ``scale`` and the last convolution's kernel
    rolled when ``scale != 1`` (another model of the same architecture), saved at ``path``."""
    model = BUILDERS["gap_cnn"]()
    if scale != 1.0:
        for w in model.weights:
            w.assign(w.numpy() * scale)
        k = model.get_layer("conv5").kernel
        k.assign(np.roll(k.numpy(), 3, axis=-1))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def small_config(*files, models=(), **kw) -> RunConfig:
    return RunConfig(models=models, model_files=tuple(str(f) for f in files), methods=("saliency",), photos=(),
                     scenes=0, birds=0, synthetic=2, stages=("complexity",), **kw)


def run(cfg, out, log=None) -> pd.DataFrame:
    # release_models=False: no gc.collect() per model (a second each with TensorFlow loaded)
    return GridRun(cfg, out, progress=False, log=log, release_models=False).run()


def direct_saliency(path: Path, images: np.ndarray) -> np.ndarray:
    """Saliency maps (N, H, W) of the model in ``path`` on ``images``, computed directly."""
    spec = load_model_file(path)
    return REAL_EXPLAIN("saliency", spec, spec.preprocess(images), target=ClassTarget("top")).heatmap


def stored_images(root: Path, model: str) -> np.ndarray:
    """The images (N, H, W, 3) ``model`` saw in run folder ``root``."""
    record = root / "models.json"
    key = json.loads(record.read_text())[model]["key"] if record.is_file() else model  # stored by name before
    with np.load(root / "images" / f"{key}.npz") as z:
        return z["images"]


# ------------------------------------------------------------------ item 1: names are not identity
@pytest.fixture(scope="module")
def same_names(tmp_path_factory):
    """One run of the zoo's mini_vgg and two files a/mini_vgg.keras, b/mini_vgg.keras (32 px
    GAP models with other weights): three models of one name."""
    d = tmp_path_factory.mktemp("same_names")
    files = (save_gap(d / "a" / "mini_vgg.keras"), save_gap(d / "b" / "mini_vgg.keras", scale=-0.5))
    out = d / "run"
    results = run(small_config(*files, models=("mini_vgg",)), out)
    return out, files, results


def test_two_files_with_one_name_are_two_models(same_names):
    out, (a, b), results = same_names
    cells = pd.read_parquet(out / "cells.parquet").set_index(["model", "neuron"])
    record = json.loads((out / "models.json").read_text())
    assert {n: r["source"] for n, r in record.items()} == {
        "mini_vgg": "mini_vgg", "mini_vgg~2": f"file:{a}", "mini_vgg~3": f"file:{b}"}
    assert len({r["key"] for r in record.values()}) == 3
    assert (cells["status"] == "ok").all() and len(cells) == 3 * 3
    for name, path in (("mini_vgg~2", a), ("mini_vgg~3", b)):
        stored = np.load(cell_file(out, name, "saliency", "logit"))["heatmap"]
        np.testing.assert_allclose(stored, direct_saliency(path, stored_images(out, name)), rtol=1e-5, atol=1e-7)
    heat = [np.load(cell_file(out, n, "saliency", "logit"))["heatmap"] for n in ("mini_vgg~2", "mini_vgg~3")]
    assert not np.allclose(*heat)
    scored = results[results["metric"] == "sparseness"].groupby("model")["value"].mean()
    assert set(scored.index) == set(record) and scored["mini_vgg~2"] != scored["mini_vgg~3"]


def test_a_file_named_like_a_zoo_model_does_not_collide(same_names):
    out, _, results = same_names
    zoo = np.load(cell_file(out, "mini_vgg", "saliency", "logit"))["heatmap"]
    file = np.load(cell_file(out, "mini_vgg~2", "saliency", "logit"))["heatmap"]
    assert zoo.shape == (2, 64, 64) and file.shape == (2, 32, 32)
    from cnnvis_eval.models import load_model

    spec = load_model("mini_vgg")
    np.testing.assert_allclose(zoo, REAL_EXPLAIN("saliency", spec, spec.preprocess(stored_images(out, "mini_vgg")),
                                                 target=ClassTarget("top")).heatmap, rtol=1e-5, atol=1e-7)
    assert set(results[results["metric"] == "sparseness"]["model"]) == {"mini_vgg", "mini_vgg~2", "mini_vgg~3"}


# ------------------------------------------------------------------ item 2: a changed file is a new model
def test_a_model_file_saved_over_is_evaluated_anew(tmp_path):
    path = save_gap(tmp_path / "model.keras")
    cfg, out, log = small_config(path), tmp_path / "run", []
    run(cfg, out)
    old_file = cell_file(out, "model", "saliency", "logit")
    old = np.load(old_file)["heatmap"]

    save_gap(path, scale=-0.5)  # retrained, saved over the same path: the configuration is unchanged
    results = run(cfg, out, log=log.append)
    new = np.load(cell_file(out, "model", "saliency", "logit"))["heatmap"]
    expected = direct_saliency(path, stored_images(out, "model"))
    assert not np.allclose(new, old)
    np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)
    assert any("model" in m and "changed" in m for m in log), log
    # the scores are the new heatmaps' too
    from cnnvis_eval.metrics import get_metric

    got = results[(results["metric"] == "sparseness") & (results["neuron"] == "logit")].sort_values("image")
    np.testing.assert_allclose(got["value"], get_metric("sparseness")().evaluate(expected), rtol=1e-5)
    assert old_file.is_file()  # the old content's files stay, unused


# ------------------------------------------------------------------ item 3: damaged files
@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    cfg = small_config(save_gap(d / "model.keras"))
    out = d / "run"
    results = run(cfg, out)
    return out, cfg, results


def _heatmap(root):
    return cell_file(root, "model", "saliency", "logit")


def _arrays(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def empty(p):
    p.write_bytes(b"")


def wrong_shape(p):
    z = _arrays(p)
    np.savez(p, **{**z, "heatmap": z["heatmap"][:, ::2, ::2]})


def nan_heatmap(p):
    z = _arrays(p)
    z["heatmap"][1, 3, 4] = np.nan
    np.savez(p, **z)


DAMAGE = {  # id: (which file, how)
    "heatmap-truncated": (_heatmap, truncate),
    "heatmap-empty": (_heatmap, empty),
    "heatmap-wrong-shape": (_heatmap, wrong_shape),
    "heatmap-nan": (_heatmap, nan_heatmap),
    "rows-empty": (lambda r: next((r / "rows" / "scores").glob("*.parquet")), empty),
    "images-empty": (lambda r: next((r / "images").glob("*.npz")), empty),
    "config-damaged": (lambda r: r / "config.json", lambda p: p.write_text(p.read_text()[:40])),
    "models-json-damaged": (lambda r: r / "models.json", lambda p: p.write_text("{\"model\": ")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_moved_aside_and_computed_again(base_run, tmp_path, damage):
    base, cfg, results = base_run
    out = tmp_path / "run"
    shutil.copytree(base, out)
    which, how = DAMAGE[damage]
    path = which(out)
    original = path.read_bytes()
    how(path)
    log = []
    again = run(cfg, out, log=log.append)
    assert (path.parent / (path.name + ".corrupt")).is_file()
    assert any(str(path) in m for m in log), log
    pd.testing.assert_frame_equal(strip_timing(again), strip_timing(results), rtol=1e-5, atol=1e-7)
    if path.suffix == ".npz":
        got, want = _arrays(path), _arrays(base / path.relative_to(out))
        assert got.keys() == want.keys()
        for k in want:
            if k in ("seconds", "seconds_per_image"):
                continue
            if want[k].dtype.kind == "f":
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
            else:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    elif path.name == "config.json":
        assert json.loads(path.read_text())["config"] == json.loads(original)["config"]
    elif path.suffix == ".json":
        assert json.loads(path.read_text()) == json.loads(original)


def test_collect_killed_while_writing_leaves_whole_files(base_run, tmp_path, monkeypatch):
    """GridRun.collect writes results, curves and verdicts through a temporary file and a
    rename: a collect killed half way through a write (bytes written, then Ctrl-C) leaves the
    previous files readable and no temporary file behind."""
    base, cfg, results = base_run
    out = tmp_path / "run"
    shutil.copytree(base, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    assert {"results.parquet", "verdicts.parquet"} <= before.keys()

    def half_then_interrupt(self, target, *a, **k):
        Path(target).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        GridRun(cfg, out, progress=False, log=None).collect()
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == before
    assert not list(out.glob(".*.tmp"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(base / "results.parquet"))


@pytest.mark.parametrize("how", ["nan-array", "raises"])
def test_a_non_finite_heatmap_is_an_error_cell(base_run, tmp_path, monkeypatch, how):
    """A method giving NaN for image 1 (as an array, or raising, as explain() does for
    non-finite maps of finite inputs): an error cell naming the method and the image; the
    other cells and the run go on; the cell is not stored, so the next run retries it."""
    _, cfg, _ = base_run  # its model (loaded and traced) into a new folder
    calls = []

    def nan_explain(method, model, x, target=None, **kw):
        """The grid explains a cell as two calls: image 0, then image 1."""
        e = REAL_EXPLAIN(method, model, x, target=target, **kw)
        if method == "saliency" and isinstance(target, ClassTarget):
            calls.append(len(x))
            if len(calls) == 2:  # image 1 of the logit cell
                if how == "raises":
                    raise InputError("saliency gave a non-finite heatmap for image 0 of the batch")
                e.heatmap = e.heatmap.copy()
                e.heatmap[0, 2, 2] = np.nan
        return e

    monkeypatch.setattr(cnnvis_eval, "explain", nan_explain)
    results = run(cfg, tmp_path / "run")
    cells = pd.read_parquet(tmp_path / "run" / "cells.parquet").set_index(["method", "neuron"])
    bad = cells[cells["status"] == "error"]
    assert list(bad.index) == [("saliency", "logit")]
    msg = bad["message"].iloc[0]
    assert "saliency" in msg and "image" in msg
    assert msg == ("saliency gave a non-finite heatmap (NaN or inf) for image 1 (syn001)" if how == "nan-array"
                   else "InputError: saliency gave a non-finite heatmap for image 0 of the batch")
    assert cell_file(tmp_path / "run", "model", "saliency", "logit") is None
    assert (cells.drop(index=[("saliency", "logit")])["status"] == "ok").all()
    assert np.isfinite(results["value"]).all()
    assert set(results["neuron"]) == {"mid", "high"}
