"""The command line (``cnnvis-eval run | report | list``) and ``pytest --cnnvis-report DIR``.

The CLI is called in-process through :func:`cnnvis_eval.cli.main` (what the console script
runs); the pytest plugin is checked in a subprocess on a tiny test file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cnnvis_eval as cv
from cnnvis_eval.cli import build_parser, main
from suites.support.grid_fixtures import cell_file, save_model


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1] for line in out.splitlines()}
    assert set(lines) == {"methods", "models", "metrics", "images", "checks"}
    from cnnvis_eval.testing.session import check_names

    assert lines["checks"].split("(")[0].replace(" ", "").split(",") == check_names()
    assert [m.strip() for m in lines["methods"].split(",")] == cv.list_methods()
    models = [m.strip() for m in lines["models"].split(",")]
    assert {"vgg16", "inception_v3", "xception", "resnet50", "mobilenet_v2", "mini_vgg", "mini_resnet"} <= set(models)
    for metric in ("pointing_game", "deletion_auc", "insertion_auc", "model_randomization"):
        assert metric in lines["metrics"]
    assert "chelsea" in lines["images"] and "synthetic" in lines["images"]


def test_run_then_report(tmp_path, capsys):
    model = save_model("gap_cnn", tmp_path / "models")
    argv = ["run", "--model-file", str(model), "--methods", "saliency,cam", "--images", "chelsea",
            "synthetic:2", "--out", str(tmp_path / "reports"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    runs = list((tmp_path / "reports").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("run-")
    page = runs[0] / "index.html"
    assert f"report: {page}" in out and page.is_file()
    results = pd.read_parquet(runs[0] / "results.parquet")
    assert set(results["method"]) == {"saliency", "cam", "control:edge_sobel", "control:random"}
    assert set(results["model"]) == {"gap_cnn"}
    assert set(results["image"]) - {"*"} == {"chelsea", "syn000", "syn001"}
    # the same command again resumes the same run folder (nothing left to compute)
    mtime = cell_file(runs[0], "gap_cnn", "saliency", "logit").stat().st_mtime_ns
    assert main(argv) == 0
    assert list((tmp_path / "reports").iterdir()) == runs
    assert cell_file(runs[0], "gap_cnn", "saliency", "logit").stat().st_mtime_ns == mtime
    # report rebuilds the page from the stored results; a folder written before grid runs
    # stored their verdicts gets them derived, so its scorecard is not empty
    stored = pd.read_parquet(runs[0] / "verdicts.parquet")
    assert set(stored["metric"]) >= {"randomization.cascading_all"}
    page.unlink()
    (runs[0] / "verdicts.parquet").unlink()
    capsys.readouterr()
    assert main(["report", str(runs[0])]) == 0
    assert page.is_file() and f"report: {page}" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(runs[0] / "verdicts.parquet"), stored)


def test_run_options_reach_the_configuration(tmp_path, monkeypatch):
    seen = {}

    class FakeRun:
        def __init__(self, config, out, progress=True, workers=None):
            seen.update(config=config, out=Path(out), progress=progress, workers=workers)

        def run(self):
            pass

    import cnnvis_eval.evaluation as evaluation
    import cnnvis_eval.evaluation.inputs as inputs
    import cnnvis_eval.report as report
    from cnnvis_eval.models.files import ModelFile

    monkeypatch.setattr(evaluation, "GridRun", FakeRun)
    monkeypatch.setattr(report, "build_report",
                        lambda out, benchmarks=None: seen.update(benchmarks=benchmarks) or Path(out) / "index.html")
    monkeypatch.setattr(inputs, "load_spec", lambda name, config: seen.setdefault("loaded", []).append(name))
    assert main(["run", "--models", "mini_vgg", "resnet50", "--methods", "lime", "--images", "coffee,rocket",
                 "--weights", "none", "--input-size", "96", "--seed", "3", "--out", str(tmp_path),
                 "--run-id", "mine", "--workers", "1"]) == 0
    cfg = seen["config"]
    assert cfg.models == ("mini_vgg", "resnet50") and cfg.methods == ("lime",)
    assert cfg.photos == ("coffee", "rocket") and cfg.synthetic == 0
    assert cfg.weights is None and cfg.input_size == 96 and cfg.seed == 3
    assert seen["out"] == tmp_path / "mine" and seen["progress"] is True and seen["workers"] == 1
    assert seen["benchmarks"] is None
    # defaults: the five trained mini models, every method, photos and synthetic images
    assert main(["run", "--out", str(tmp_path), "--quiet"]) == 0
    cfg = seen["config"]
    assert cfg.models == ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
    assert cfg.methods == tuple(cv.list_methods()) and cfg.photos and cfg.synthetic > 0
    assert seen["out"] == tmp_path / cfg.run_id() and seen["progress"] is False
    assert seen["workers"] is None  # one process per core
    # --benchmarks reaches the report (after a check that the file reads)
    bench = tmp_path / "bench.json"
    bench.write_text('{"benchmarks": []}')
    assert main(["run", "--out", str(tmp_path), "--quiet", "--benchmarks", str(bench)]) == 0
    assert seen["benchmarks"] == str(bench)
    # --model-file alone evaluates only that file
    model = tmp_path / "a.keras"
    model.write_bytes(b"")  # not read: load_spec is replaced
    assert main(["run", "--model-file", str(model), "--out", str(tmp_path)]) == 0
    assert seen["config"].models == () and seen["config"].model_files == (str(model),)
    assert seen["loaded"] == [ModelFile(str(model))]  # checked before the run starts


@pytest.mark.parametrize("argv, message", [
    (["run", "--methods", "no_such_method"], "unknown method 'no_such_method'"),
    (["run", "--images", "chelsea", "--synthetic", "-1"], "synthetic must be >= 0"),
    (["run", "--benchmarks", "no/such/file.json"], "cannot read 'no/such/file.json'"),
])
def test_run_rejects_bad_options(argv, message, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnvis-eval: error:") and message in err


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_model_file_with_lambda_layer_is_refused(tmp_path, capsys, suffix):
    """Safe mode: a Lambda layer would run code when loaded; the run refuses it by name."""
    from suites.support.grid_fixtures import BUILDERS

    model = tmp_path / f"lambda_cnn{suffix}"
    BUILDERS["lambda_cnn"]().save(model)
    argv = ["run", "--model-file", str(model), "--methods", "saliency", "--images", "chelsea",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"model file {str(model)!r} is not safe to load" in err
    assert "Lambda" in err and "safe mode" in err
    assert not list((tmp_path / "out").glob("*/heatmaps/*"))


@pytest.mark.parametrize("kind", ["garbage", "missing", "directory", "h5"])
def test_unreadable_model_file_is_a_clear_error(kind, tmp_path, capsys):
    path = tmp_path / {"garbage": "model.keras", "missing": "nope.keras", "directory": "dir.keras",
                       "h5": "model.h5"}[kind]
    if kind == "garbage":
        path.write_bytes(b"\x00\x01 definitely not a zip archive")
    elif kind == "directory":
        path.mkdir()
    elif kind == "h5":
        path.write_text("plain text, not HDF5")
    argv = ["run", "--model-file", str(path), "--methods", "saliency", "--images", "chelsea",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = {"garbage": "it is not a .keras zip archive", "missing": "does not exist",
                "directory": "does not exist (or is not a file)", "h5": "it is not an HDF5 file"}[kind]
    assert err.startswith(f"cnnvis-eval: error: model file {str(path)!r}") and expected in err
    assert "Traceback" not in err


def test_report_of_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no results.parquet" in capsys.readouterr().err


def test_report_shows_the_committed_benchmark_baseline(tmp_path, capsys):
    """``cnnvis-eval report DIR --benchmarks fixtures/benchmarks``: every method's ratio on the
    mini models, from the committed pytest-benchmark baseline (CAM is n/a on mini_vgg)."""
    import json

    pd.DataFrame({"method": ["saliency"], "model": ["m"], "image": ["0"], "neuron": ["logit"],
                  "metric": ["pointing_game"], "value": [1.0]}).to_csv(tmp_path / "results.csv", index=False)
    baseline = Path(__file__).parents[2] / "fixtures" / "benchmarks"
    assert main(["report", str(tmp_path), "--benchmarks", str(baseline)]) == 0
    table = pd.read_csv(tmp_path / "table_benchmarks.csv", index_col="method")
    minis = ["mini_inception", "mini_mobilenet", "mini_resnet", "mini_vgg", "mini_xception"]
    assert set(table.index) == set(cv.list_methods()) and set(minis) <= set(table.columns)
    assert table[minis].isna().sum().sum() == 1 and np.isnan(table.at["cam", "mini_vgg"])
    # the values are the file's extra_info ratios
    (path,) = baseline.rglob("*.json")
    by_name = {b["name"]: b["extra_info"]["ratio"] for b in json.loads(path.read_text())["benchmarks"]}
    assert table.at["grad_cam", "mini_resnet"] == pytest.approx(by_name["test_bench_method[grad_cam-mini_resnet]"])


def test_parser_documents_the_commands():
    help_text = build_parser().format_help()
    for cmd in ("run", "report", "list"):
        assert cmd in help_text


SUITE_FILE = '''
import numpy as np
import pandas as pd


def test_measures(record):
    record("pointing_game", [1, 0, 1], method="saliency", model="toy_a", image=["i0", "i1", "i2"])
    record("pointing_game", [1, 1, 1], method="grad_cam", model="toy_a", image=["i0", "i1", "i2"])
    record("deletion_auc", [0.4, 0.2], method="saliency", model="toy_b")
    record("deletion_auc", [0.1, 0.3], method="grad_cam", model="toy_b")
    record.agreement(pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["saliency", "grad_cam"],
                                  columns=["saliency", "grad_cam"]), model="toy_a")
    record.curve(pd.DataFrame({"method": "saliency", "model": "toy_a", "step": [0, 1, 2], "layer": ["", "b", "a"],
                               "image": 0, "metric": "spearman_abs", "value": [1.0, 0.5, 0.1]}))
    record.benchmark("test_bench[saliency-toy_a]", "methods", {"method": "saliency", "arch": "toy_a", "ratio": 1.25},
                     0.01)


def test_expected_failure_still_recorded(record):
    record("insertion_auc", 0.7, method="saliency", model="toy_a")
    assert False
'''


def test_pytest_cnnvis_report_writes_a_report(tmp_path, monkeypatch, capsys):
    """``pytest ... --cnnvis-report DIR`` writes the long frame and a report from the record fixture.

    The inner pytest session runs in this process (a subprocess would spend its time
    importing TensorFlow again), with the plugin's row buffers swapped for empty ones.
    """
    from suites.support import record as plugin

    for name in ("_ROWS", "_CURVES", "_AGREEMENT", "_BENCHMARKS"):
        monkeypatch.setattr(plugin, name, [])
    (tmp_path / "test_tiny_suite.py").write_text(textwrap.dedent(SUITE_FILE))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "suite-html"
    code = pytest.main(["-p", "suites.support.record", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
                        "test_tiny_suite.py", "--cnnvis-report", str(out)])
    stdout = capsys.readouterr().out
    assert code == pytest.ExitCode.TESTS_FAILED, stdout[-3000:]  # one test fails on purpose
    assert "1 failed, 1 passed" in stdout
    assert f"cnnvis_eval suite report: {out / 'index.html'}" in stdout
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 3 + 3 + 2 + 2 + 1
    assert set(results["test"]) == {"test_measures", "test_expected_failure_still_recorded"}
    page = (out / "index.html").read_text()
    assert "cnnvis_eval suite report" in page
    assert "Localization: pointing-game hit rate" in page and "Faithfulness: deletion AUC" in page
    # best values marked: grad_cam hits 3/3 on toy_a; its deletion AUC (mean 0.2 < 0.3) is lower
    assert '<tr><th>grad_cam</th><td class="best">1.000</td>' in page
    assert '<tr><th>grad_cam</th><td class="best">0.200</td>' in page
    assert page.count("data:image/png;base64,") == 2  # agreement matrix and randomization curves
    assert (tmp_path / "reports" / "suite" / "results.parquet").is_file()
    bench = pd.read_parquet(out / "benchmarks.parquet")
    assert list(bench["name"]) == ["test_bench[saliency-toy_a]"] and bench["ratio"].tolist() == [1.25]
    assert '<tr><th>saliency</th><td class="best">1.25</td></tr>' in page
