"""The Ray executor (issue 18): tasks on Ray actors, a Ray run stored exactly like a local
one, resumable, a worker that dies mid-run costs its task only, clear errors.

All Ray tests share one local Ray instance (2 CPUs, loopback, a short temporary session
folder removed afterwards), started once for this module and shut down by the fixture's
finalizer; they run in one xdist group.  Skipped when Ray is not installed.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval.evaluation import GridRun, LocalExecutor, RunConfig
from cnnvis_eval.evaluation.ray_executor import RayExecutor, RayUnavailable, next_task

pytestmark = pytest.mark.xdist_group("ray")
ROOT = Path(__file__).resolve().parents[2]
TIMING = ("cost_ratio", "seconds_per_image")  # wall-clock rows: never equal between two runs


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "cnnvis_eval[ray]")')
    temp = tempfile.mkdtemp(prefix="cvr", dir="/tmp")  # short: Unix socket paths are limited
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "TMPDIR")}
    # the workers (started by the raylet with this environment) import suites.*, and keep their
    # temporary files (the scratch folder of a worker killed mid-task) in the session folder
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old["PYTHONPATH"]] if old["PYTHONPATH"] else []))
    os.environ["TMPDIR"] = temp
    try:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp,
                 log_to_driver=False, configure_logging=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def tasks(ray_session):
    """suites.support.ray_tasks, its method unregistered in this process (the tests that use
    it register it for their duration)."""
    from cnnvis_eval.methods.base import METHODS
    from suites.support import ray_tasks

    METHODS.remove(ray_tasks.EXIT_METHOD)
    return ray_tasks


@pytest.fixture(scope="module")
def executor(tasks):
    """One warm actor (2 CPUs: TensorFlow threads as in this process) for the module's runs."""
    with RayExecutor(1, cpus_per_worker=2, modules=("suites.support.ray_tasks",)) as ex:
        yield ex


def _config(methods, **kw) -> RunConfig:
    base = dict(models=("mini_vgg",), photos=("chelsea", "coffee"), synthetic=0, scenes=0, birds=0, randomization_images=1,
                stages=("complexity", "agreement", "randomization"), method_params={"rise": {"n_masks": 16}})
    return RunConfig(methods=methods, **{**base, **kw})


def _stored(root: Path) -> dict:
    """Every stored file of a run folder: .npz as arrays (timings left out), parquet as frames."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix == ".npz":
            with np.load(p) as z:
                out[rel] = {k: z[k] for k in z.files if not k.startswith("seconds")}
        elif p.suffix == ".parquet":
            df = pd.read_parquet(p)
            if "metric" in df.columns:
                df = df[~df["metric"].isin(TIMING)]
            out[rel] = df.drop(columns=[c for c in df.columns if "seconds" in c]).reset_index(drop=True)
        else:
            out[rel] = None
    return out


def test_next_task_keeps_an_actor_on_its_model():
    keys = ["a", "a", "b", "b", "c"]
    assert next_task([0, 1, 2, 3, 4], keys, None, set()) == 0
    assert next_task([1, 2, 3, 4], keys, None, {"a"}) == 2  # a fresh actor takes a model nobody holds
    assert next_task([1, 3, 4], keys, "b", {"a"}) == 3  # its own model first
    assert next_task([1, 4], keys, "b", {"a"}) == 4  # then one nobody holds
    assert next_task([1], keys, "b", {"a"}) == 1  # then any


def test_workers_without_the_package_are_one_clear_error(ray_session):
    # first of the Ray tests: the module's shared actor holds both CPUs once started
    with pytest.raises(RayUnavailable, match=r"cannot start.*No module named 'no_such_module_cv'.*pip install"):
        with RayExecutor(1, modules=("no_such_module_cv",)):
            pass


def test_map_order_progress_and_errors(executor, tasks):
    ex = executor
    assert ex.workers == 1 and ex.cluster["nodes"] == 1 and ex.cluster["cpus"] == 2
    assert ex.cluster["gpus"] == 0 and ex.cluster["gpus_per_worker"] == 0
    ticks, done = [], []
    out = ex.map(tasks.square, [(k,) for k in range(1, 7)], tick=ticks.append, on_done=done.append,
                 collect=lambda r: -r)
    assert out == [-k * k for k in range(1, 7)]
    assert sum(ticks) == 21 and sum(done) == 6  # progress arrives with the completed tasks
    with pytest.raises(ValueError, match="boom"):  # an exception of the task itself
        ex.map(tasks.fail, [("boom",)])


def test_ray_run_stores_what_a_local_run_stores_and_resumes(executor, tmp_path):
    # three cheap methods, one stochastic (RISE, seeded); bit-identical given equal TF threads (2)
    config = _config(("saliency", "grad_cam", "rise"))
    local = GridRun(config, tmp_path / "local", progress=False, executor=LocalExecutor()).run()
    remote = GridRun(config, tmp_path / "ray", progress=False, executor=executor).run()
    a, b = _stored(tmp_path / "local"), _stored(tmp_path / "ray")
    assert sorted(a) == sorted(b)  # the same files
    for rel, va in a.items():
        if isinstance(va, dict):
            assert va.keys() == b[rel].keys(), rel
            for k in va:
                np.testing.assert_array_equal(va[k], b[rel][k], err_msg=f"{rel}:{k}")
        elif isinstance(va, pd.DataFrame):
            pd.testing.assert_frame_equal(va, b[rel], check_exact=True, obj=rel)
    keys = ["method", "model", "image", "neuron", "metric"]
    drop = lambda f: f[~f["metric"].isin(TIMING)].sort_values(keys).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(drop(local), drop(remote), check_exact=True)
    import json

    cluster = json.loads((tmp_path / "ray" / "config.json").read_text())["cluster"]
    assert (cluster["executor"], cluster["nodes"], cluster["cpus"], cluster["gpus"]) == ("ray", 1, 2, 0)
    assert "cluster" not in json.loads((tmp_path / "local" / "config.json").read_text())
    # resume: nothing stored is computed again
    heat = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "heatmaps").rglob("*.npz")}
    rows = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "rows").rglob("*.parquet")}
    damaged = sorted(heat)[0]
    damaged.write_bytes(b"not an npz")  # the driver's copy is damaged: moved aside and computed again
    again = GridRun(config, tmp_path / "ray", progress=False, executor=executor).run()
    heat.pop(damaged)
    assert {p: p.stat().st_mtime_ns for p in heat} == heat
    assert (damaged.with_name(damaged.name + ".corrupt")).is_file()
    with np.load(damaged) as z:  # recomputed by the worker, written back by the driver
        np.testing.assert_array_equal(z["heatmap"], b[damaged.relative_to(tmp_path / "ray").as_posix()]["heatmap"])
    assert {p: p.stat().st_mtime_ns for p in rows} == rows
    pd.testing.assert_frame_equal(drop(again), drop(remote), check_exact=True)


def test_image_shards():
    from cnnvis_eval.evaluation.remote import image_shards

    assert image_shards(3, 2, 1, 1) == [(0, 2), (2, 3)]
    assert image_shards(3, 3, 1, 1) == image_shards(3, 9, 1, 1) == [None]
    assert image_shards(10, None, 32, 8) == [None]  # 32 tasks for 8 workers: not split
    assert image_shards(10, None, 20, 8) == [(0, 5), (5, 10)]  # 20 tasks -> 40 (>= 4 per worker)
    assert image_shards(10, None, 4, 8) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]  # 4 -> 20
    assert image_shards(2, None, 1, 8) == [(0, 1), (1, 2)]  # never more shards than images
    assert image_shards(4, None, 1, 1) == [None]  # one worker: nothing to balance


def test_shards_hold_whole_explain_batches():
    """The alignment rule, by hand.  A local run explains image 0 alone, then 1.. in batches
    of b: the batches of 16 images of 40 are 0 | 1-16 | 17-32 | 33-39, so a shard may end at
    1, 17, 33 or 40; a group of batches 2, 8 and 1 (a perturbation method) has unit lcm = 8."""
    from cnnvis_eval.evaluation.remote import explain_batch, image_shards, rounded_note, shard_unit

    assert explain_batch("saliency", {}) == 16 and explain_batch("saliency", {"batch_size": 3}) == 3
    assert explain_batch("lrp_epsilon", None) == 8  # the relevance presets' default
    assert explain_batch("lime", {"batch_size": 64}) == explain_batch("rise") == explain_batch("occlusion") == 1
    params = {"saliency": {"batch_size": 2}}
    assert shard_unit(("saliency", "lrp_epsilon", "rise"), params) == 8
    assert shard_unit(("saliency", "rise"), params) == 2 and shard_unit(("rise",), {}) == 1
    assert shard_unit(("saliency", "smoothgrad"), {"smoothgrad": {"batch_size": 6}}) == 48
    assert image_shards(40, 16, 1, 1, unit=16) == [(0, 1), (1, 17), (17, 33), (33, 40)]
    assert image_shards(40, 10, 1, 1, unit=16) == image_shards(40, 16, 1, 1, unit=16)  # 10 -> 16
    assert image_shards(40, 20, 1, 1, unit=8) == [(0, 17), (17, 40)]  # 20 -> 24: at most 24, ends 1 + 8k
    assert image_shards(3, 1, 1, 1, unit=2) == [(0, 1), (1, 3)]  # 1 -> 2: the local batches 0 | 1-2
    assert image_shards(10, 1, 1, 1, unit=16) == [None]  # 10 images <= 16: one task
    assert image_shards(5, 2, 1, 1, unit=1) == [(0, 2), (2, 4), (4, 5)]  # no batches to respect
    assert image_shards(10, None, 4, 8, unit=2) == [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9), (9, 10)]
    assert rounded_note(None, [("saliency",)], {}) is None and rounded_note(16, [("saliency",)], {}) is None
    assert rounded_note(3, [("saliency", "rise"), ("grad_cam",), ("lime",)], params) == (
        "images per task 3 rounded up to whole explain batches: 4 for saliency, rise; 16 for grad_cam "
        "(so that a split run stores a local run's heatmaps bit for bit)")


def test_explain_plan_sets_one_image_methods_apart():
    """A split run's explain tasks: a group's one-image-at-a-time methods (LIME) apart from the
    batched ones, each part in shards of its own unit (lcm(16, 8) = 16 > 10 images: unsplit);
    a run that is not split keeps its groups whole."""
    from cnnvis_eval.evaluation.remote import explain_plan

    groups = [("saliency", "lime", "lrp_epsilon"), ("lrp_epsilon",)]
    assert explain_plan(groups, 10, 1, 2, 1, {}) == [
        (("saliency", "lrp_epsilon"), [None]), (("lime",), [(k, k + 1) for k in range(10)]),
        (("lrp_epsilon",), [(0, 1), (1, 9), (9, 10)])]
    assert explain_plan(groups, 10, None, 8, 2, {}) == [(g, [None]) for g in groups]  # 8 tasks for 2 workers


def test_image_shards_store_what_a_local_run_stores_and_resume(executor, tmp_path, monkeypatch):
    """(model, method group, image shard) tasks: the driver assembles each cell from its
    parts (in image order), bit for bit a local run's (the shards hold whole explain batches
    of the local run: saliency's batches of 2 are 0 | 1-2, RISE's 0 | 1 | 2); a part stored by
    an interrupted run is used, not computed again."""
    from cnnvis_eval.evaluation.runner import shard_path

    config = _config(("saliency", "rise"), synthetic=1, stages=("complexity",),
                     method_params={"rise": {"n_masks": 16}, "saliency": {"batch_size": 2}})
    local = GridRun(config, tmp_path / "local", progress=False, executor=LocalExecutor()).run()
    tasks, logged, original = [], [], executor.map
    monkeypatch.setattr(executor, "images_per_task", 1)  # saliency's rounded up to 2
    monkeypatch.setattr(executor, "map", lambda fn, ts, **kw: tasks.append(ts) or original(fn, ts, **kw))
    remote = GridRun(config, tmp_path / "ray", progress=False, executor=executor, log=logged.append).run()
    assert [(t[3], t[5]) for t in tasks[0]] == [(("saliency",), (0, 1)), (("saliency",), (1, 3)),
                                                (("rise",), (0, 1)), (("rise",), (1, 2)), (("rise",), (2, 3))]
    assert logged[0].startswith("images per task 1 rounded up to whole explain batches: 2 for saliency (")
    a, b = _stored(tmp_path / "local"), _stored(tmp_path / "ray")
    assert sorted(a) == sorted(b) and not any(".images" in rel for rel in b)  # the parts are gone
    for rel, va in a.items():
        if isinstance(va, dict):
            assert va.keys() == b[rel].keys(), rel
            for k in va:
                assert va[k].dtype == b[rel][k].dtype and va[k].tobytes() == b[rel][k].tobytes(), f"{rel}:{k}"
        elif isinstance(va, pd.DataFrame):
            pd.testing.assert_frame_equal(va, b[rel], check_exact=True, obj=rel)
    keys = ["method", "model", "image", "neuron", "metric"]
    drop = lambda f: f[~f["metric"].isin(TIMING)].sort_values(keys).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(drop(local), drop(remote), check_exact=True)
    # an interrupted run stored the first part of one cell (marked by its timing) and not the cell
    cell = sorted((tmp_path / "ray" / "heatmaps").rglob("logit.*.npz"))[0]
    with np.load(cell) as z:
        whole = {k: z[k] for k in z.files}
    part = {**{k: whole[k][:1] for k in ("heatmap", "indices", "scores")}, "seconds": np.float64(1000.0),
            "seconds_per_image": np.float64(1.0)}
    np.savez(shard_path(cell, (0, 1)), **part)
    cell.unlink()
    GridRun(config, tmp_path / "ray", progress=False, executor=executor).run()
    with np.load(cell) as z:
        np.testing.assert_array_equal(z["heatmap"], whole["heatmap"])
        assert 1000.0 < float(z["seconds"]) < 1000.0 + float(whole["seconds"]) + 60  # the part's time, reused
    assert not shard_path(cell, (0, 1)).exists()


@pytest.fixture(scope="module")
def onet_files(tmp_path_factory):
    """MTCNN's ONet (a subclassed model: --custom-object, three outputs: --output) as a user's
    file, and the astronaut's face as its one image."""
    from skimage import io

    from suites.support.models import astronaut_face, mtcnn_onet

    d = tmp_path_factory.mktemp("onet")
    mtcnn_onet().save(d / "onet.keras")
    (d / "faces").mkdir()
    io.imsave(d / "faces" / "astronaut.png", astronaut_face(), check_contrast=False)
    return d / "onet.keras", d / "faces"


def test_check_on_ray_gives_the_local_verdicts(executor, onet_files, tmp_path, capsys, monkeypatch):
    """``cnnvis-eval check --executor ray``: the (method, check) units run on the actor, which
    loads the user's file (its class imported there) once for all of them; the verdicts, the
    scorecard and the folder equal a local check's (deterministic methods, equal TF threads)."""
    import json

    import cnnvis_eval.evaluation.ray_executor as rex
    from cnnvis_eval import cli

    model, faces = onet_files
    base = ["check", str(model), "--images", str(faces), "--preprocess=-1,1", "--quiet", "--custom-object",
            "mtcnn.network.onet:ONet", "--output", "fc6-3", "--methods", "saliency", "grad_cam",
            "--checks", "randomization.cascading_top", "invariance.batch", "stability"]
    assert cli.main(base + ["--out", str(tmp_path / "local")]) == 0
    local = capsys.readouterr().out
    made = []
    # the module's warm actor (it holds the instance's 2 CPUs) instead of a new executor
    monkeypatch.setattr(rex, "RayExecutor", lambda **kw: made.append(kw) or executor)
    assert cli.main(base + ["--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    remote = capsys.readouterr().out
    assert made == [{"workers": None, "address": None, "modules": ("mtcnn.network.onet",)}]
    assert "onet: 6 units on 1 workers, the model loaded 1 times" in remote
    card = lambda out: [ln for ln in out.splitlines() if ln.startswith(("random", "invar", "stab"))]  # noqa: E731
    assert card(remote) == card(local) and len(card(local)) == 3  # the printed scorecard
    a, b = (pd.read_parquet(tmp_path / k / "verdicts.parquet") for k in ("local", "ray"))
    assert len(a) == 16 and set(a["method"]) == {"saliency", "grad_cam"}
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert config["cluster"]["executor"] == "ray" and config["cluster"]["cpus"] == 2
    assert "cluster" not in json.loads((tmp_path / "local" / "config.json").read_text())


def test_a_worker_dying_mid_run_costs_its_cells_only(executor, tasks, tmp_path):
    # last of the module's runs: the actor dies (and is replaced)
    from cnnvis_eval.methods.base import METHODS

    METHODS.add(tasks.EXIT_METHOD, tasks.ExitWorker)
    try:
        config = _config(("saliency", tasks.EXIT_METHOD), photos=("chelsea",), stages=("complexity",))
        log = []
        results = GridRun(config, tmp_path, progress=False, log=log.append, executor=executor).run()
    finally:
        METHODS.remove(tasks.EXIT_METHOD)
    cells = pd.read_parquet(tmp_path / "cells.parquet").set_index(["method", "neuron"])
    lost = cells.loc[tasks.EXIT_METHOD]
    assert (lost["status"] == "error").all() and lost["message"].str.startswith("worker lost").all()
    assert (cells.loc["saliency", "status"] == "ok").all()
    for f in cells.loc["saliency", "file"]:  # the run folder holds what finished, readable
        with np.load(tmp_path / f) as z:
            assert z["heatmap"].shape == (1, 64, 64)
    assert set(results["method"]) == {"saliency"}
    assert any(tasks.EXIT_METHOD in line and "run again" in line for line in log)
    assert len(executor._actors) == 1  # the dead actor was replaced


def test_check_units_and_a_lost_unit(tmp_path):
    """Units are (method, check) with the check's variants, method by method; a unit whose
    worker died gives inconclusive verdicts saying so, in the local case order (no Ray)."""
    from cnnvis_eval.evaluation.ray_executor import TaskLost
    from cnnvis_eval.testing.remote import check_units, run_cases_remote, worker_modules
    from cnnvis_eval.testing.verdict import Verdict

    cases = [("randomization", "a", "cascading_top"), ("randomization", "b", "cascading_top"),
             ("randomization", "a", "independent"), ("randomization", "b", "independent"), ("cost", "a", None),
             ("cost", "b", None)]
    units = check_units(cases)
    assert units == [("a", "randomization", ("cascading_top", "independent")), ("a", "cost", (None,)),
                     ("b", "randomization", ("cascading_top", "independent")), ("b", "cost", (None,))]

    class Lossy:  # runs every unit but loses method b's randomization unit
        def share(self, value):
            return value

        def map(self, fn, tasks, tick, affinity):
            assert [affinity(t) for t in tasks] == ["a", "a", "b", "b"]
            return [TaskLost("the Ray worker running it died (killed)") if t[1][0][:2] == ("b", "randomization")
                    else {"verdicts": [[Verdict("m", m, c if v is None else f"{c}.{v}", "pass") for v in vs]
                                       for m, c, vs in t[1]], "loaded": i == 0, "pid": 7}
                    for i, t in enumerate(tasks)]

    log = []
    got = run_cases_remote({"name": "m"}, cases, Lossy(), progress=False, log=log.append)
    assert [(v.method, v.check) for v in got] == [(m, c if v is None else f"{c}.{v}") for c, m, v in cases]
    assert [v.status for v in got] == ["pass", "inconclusive", "pass", "inconclusive", "pass", "pass"]
    assert got[1].reason == "worker lost: the Ray worker running it died (killed)"
    assert log == ["b randomization: the Ray worker running it died (killed); its verdicts are inconclusive, "
                   "run again to decide them", "m: 4 units on 1 workers, the model loaded 1 times"]
    assert worker_modules({"custom_objects": ["pkg.layers:Block", "pkg.layers:Head"],
                           "preprocess": "mine.prep:scale"}) == ("pkg.layers", "mine.prep")
    assert worker_modules({"preprocess": "-1,1"}) == ()


def test_cli_ray_errors(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray", reason='Ray is not installed (pip install "cnnvis_eval[ray]")')
    from cnnvis_eval import cli

    base = ["run", "--models", "mini_vgg", "--methods", "saliency", "--images", "chelsea", "--out", str(tmp_path)]
    for extra, message in [
        (["--executor", "ray", "--ray-address", "ray://127.0.0.1:1"], "cannot reach the Ray cluster at 'ray://127.0.0.1:1'"),
        (["--executor", "ray", "--ray-address", "nowhere"], "--ray-address must be auto, host:port or ray://host:port"),
        (["--ray-address", "auto"], "--ray-address applies to --executor ray only"),
        (["--images-per-task", "2"], "--images-per-task applies to --executor ray only"),
        (["--executor", "ray", "--images-per-task", "0"], "--images-per-task must be >= 1, got 0"),
    ]:
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cnnvis-eval: error: ") and message in err and "\n" not in err
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the options fail first")
    check = ["check", str(model), "--images", str(tmp_path), "--out", str(tmp_path / "c")]
    for extra, message in [
        (["--executor", "ray", "--ray-address", "ray://127.0.0.1:1"], "cannot reach the Ray cluster at 'ray://127.0.0.1:1'"),
        (["--ray-address", "auto"], "--ray-address applies to --executor ray only"),
        (["--workers", "2"], "--workers applies to --executor ray only"),
        (["--executor", "ray", "--workers", "0"], "--workers must be >= 1, got 0"),
    ]:
        assert cli.main(check + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cnnvis-eval: error: ") and message in err and "\n" not in err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # Ray not installed
    for command in (base, check):
        assert cli.main(command + ["--executor", "ray"]) == 2
        assert capsys.readouterr().err.strip() == ('cnnvis-eval: error: --executor ray needs Ray, which is not '
                                                   'installed: pip install "cnnvis_eval[ray]"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # nothing written


def test_importing_cnnvis_eval_never_imports_ray():
    """``ray`` is imported inside functions of ray_executor only."""
    package = ROOT / "cnnvis_eval"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "ray" or n.startswith("ray.") for n in names):
                assert path.name == "ray_executor.py", path
                assert node.col_offset > 0, f"{path}:{node.lineno} imports ray at module level"
