"""The benchmark-ratio comparison script (suites/benchmarks/compare_ratios.py)."""

from __future__ import annotations

import json
import os

import pytest

from suites.benchmarks import compare_ratios


def bench_file(path, ratios: dict, mtime=None):
    data = {"machine_info": {}, "commit_info": {}, "datetime": "x", "version": "5.2.3",
            "benchmarks": [{"name": n.split("::")[-1], "fullname": n, "group": "methods",
                            "stats": {"median": 0.1}, "extra_info": {} if r is None else {"ratio": r}}
                           for n, r in ratios.items()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


A, B, C, D = (f"suites/benchmarks/test_bench_methods.py::test_bench_method[{k}]" for k in "abcd")


def test_regression_fails_and_the_rest_passes(tmp_path, capsys):
    base = bench_file(tmp_path / "base.json", {A: 1.0, B: 2.0, C: 0.01, D: 3.0})
    # A +10% (ok), B +50% (regressed), C x4 but only +0.03 absolute (noise), D -50% (improved)
    cur = bench_file(tmp_path / "cur.json", {A: 1.1, B: 3.0, C: 0.04, D: 1.5})
    assert compare_ratios.main([str(base), str(cur), "--tolerance", "0.25"]) == 1
    out = capsys.readouterr().out
    status = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith("suites/")}
    assert status == {A: "ok", B: "regressed", C: "ok", D: "improved"}
    assert "4 ratios compared, 1 regression(s) beyond 25%" in out
    assert compare_ratios.main([str(base), str(cur), "--tolerance", "0.6"]) == 0


def test_missing_and_new_benchmarks(tmp_path, capsys):
    base = bench_file(tmp_path / "base.json", {A: 1.0, B: 2.0})
    cur = bench_file(tmp_path / "cur.json", {A: 1.0, C: 5.0, D: None})
    assert compare_ratios.main([str(base), str(cur)]) == 0
    rows = {r["name"]: r["status"] for r in compare_ratios.compare(
        compare_ratios.load(base)[1], compare_ratios.load(cur)[1])}
    assert rows == {A: "ok", B: "missing", C: "new"}
    assert compare_ratios.main([str(base), str(cur), "--strict"]) == 1


def test_folders_use_the_newest_file(tmp_path):
    bench_file(tmp_path / "store" / "Linux-CPython-3.11-64bit" / "0001_old.json", {A: 9.0}, mtime=1_000)
    bench_file(tmp_path / "store" / "Linux-CPython-3.11-64bit" / "0002_new.json", {A: 1.0}, mtime=2_000)
    path, benches = compare_ratios.load(tmp_path / "store")
    assert path.name == "0002_new.json" and compare_ratios.ratio_of(benches[A]) == 1.0


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"other": 1})])
def test_unreadable_input_is_status_2(tmp_path, content, capsys):
    good = bench_file(tmp_path / "good.json", {A: 1.0})
    bad = tmp_path / "bad"
    if content is None:
        bad.mkdir()
    else:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
    assert compare_ratios.main([str(good), str(bad)]) == 2
    assert capsys.readouterr().err.startswith("compare_ratios: error:")


def test_the_committed_baseline_covers_every_method_on_every_mini():
    """fixtures/benchmarks holds pytest-benchmark's file with a positive ratio for every
    (method, mini model) case of test_bench_methods.py; a new method or a renamed case
    makes this fail until the baseline is remade (see the README, "Benchmarks")."""
    import cnnvis_eval as cv
    from cnnvis_eval.errors import UnsupportedArchitectureError
    from suites.support.models import mini_spec
    from suites.benchmarks.test_bench_methods import MINI

    root = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "benchmarks")
    _, benches = compare_ratios.load(root)
    expected = {f"suites/benchmarks/test_bench_methods.py::test_bench_method[{m}-{a}]"
                for m in cv.list_methods() for a in MINI}
    with pytest.raises(UnsupportedArchitectureError):  # mini_vgg has a Flatten head: CAM is n/a
        cv.get_method("cam")(mini_spec("mini_vgg"))
    expected.discard("suites/benchmarks/test_bench_methods.py::test_bench_method[cam-mini_vgg]")
    missing = expected - set(benches)
    assert not missing, f"baseline lacks {sorted(missing)[:5]} ... ({len(missing)})"
    ratios = {n: compare_ratios.ratio_of(benches[n]) for n in expected}
    assert all(r is not None and r > 0 for r in ratios.values()), ratios
