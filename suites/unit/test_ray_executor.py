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
    base = dict(models=("mini_vgg",), photos=("chelsea", "coffee"), synthetic=0, randomization_images=1,
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


def test_cli_ray_errors(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray", reason='Ray is not installed (pip install "cnnvis_eval[ray]")')
    from cnnvis_eval import cli

    base = ["run", "--models", "mini_vgg", "--methods", "saliency", "--images", "chelsea", "--out", str(tmp_path)]
    for extra, message in [
        (["--executor", "ray", "--ray-address", "ray://127.0.0.1:1"], "cannot reach the Ray cluster at 'ray://127.0.0.1:1'"),
        (["--executor", "ray", "--ray-address", "nowhere"], "--ray-address must be auto, host:port or ray://host:port"),
        (["--ray-address", "auto"], "--ray-address applies to --executor ray only"),
    ]:
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cnnvis-eval: error: ") and message in err and "\n" not in err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # Ray not installed
    assert cli.main(base + ["--executor", "ray"]) == 2
    assert capsys.readouterr().err.strip() == ('cnnvis-eval: error: --executor ray needs Ray, which is not '
                                               'installed: pip install "cnnvis_eval[ray]"')
    assert not any(tmp_path.iterdir())  # nothing written


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
