"""pytest plugin: every measurement the suites make goes into one long DataFrame.

Tests take the ``record`` fixture and call ``record(metric, values, method=..., model=...,
image=..., neuron=...)``; ``record.curve(frame)`` stores randomization curves.  At the end
of the session the rows are written to ``reports/suite/results.parquet`` (and CSV), and,
with ``pytest suites/ --cnnvis-report DIR``, to ``DIR`` together with an HTML report built
like a grid run's (``cnnvis-eval report DIR`` rebuilds it).  The option itself is the
package's pytest entry point's (:mod:`pytest_cnnvis_eval`), which this module registers if needed.

Rows are recorded whatever the test's outcome, so the numbers of expected failures
(``xfail``) reach the report too.  Under pytest-xdist every worker hands its rows to the
controller when it finishes (``workeroutput``), and the controller writes them all.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval import frame

COLUMNS = ["suite", "test", *frame.COLUMNS]
_ROWS: list[pd.DataFrame] = []
_CURVES: list[pd.DataFrame] = []
_AGREEMENT: list[pd.DataFrame] = []
_BENCHMARKS: list[dict] = []


def pytest_addhooks(pluginmanager):
    """``--cnnvis-report`` belongs to the package's pytest entry point (:mod:`pytest_cnnvis_eval`,
    ``pytest11: pytest_cnnvis_eval``); register it here when it is not loaded yet (a checkout
    without the entry point installed, or ``-p suites.support.record`` alone)."""
    import pytest_cnnvis_eval

    name = "pytest_cnnvis_eval"
    if not pluginmanager.is_registered(pytest_cnnvis_eval) and not pluginmanager.is_blocked(name):
        pluginmanager.register(pytest_cnnvis_eval, name)


class Recorder:
    def __init__(self, node):
        self.node = node
        parts = Path(str(node.fspath)).parts
        self.suite = parts[parts.index("suites") + 1] if "suites" in parts else "suites"
        self.test = node.name

    def __call__(self, metric: str, values, method: str = "", model: str = "", image=None,
                 neuron: str = "logit"):
        """Record one value or one value per image (``image``: ids, default 0..N-1)."""
        vals = np.atleast_1d(np.asarray(values, dtype=np.float64)).reshape(-1)
        if image is None:
            image = [str(i) for i in range(len(vals))]
        elif np.isscalar(image):
            image = [str(image)] * len(vals)
        _ROWS.append(frame.rows(metric, vals, image=[str(i) for i in image], suite=self.suite, test=self.test,
                                method=method, model=model, neuron=neuron))

    def curve(self, frame: pd.DataFrame):
        """Store a randomization curve frame (columns method, model, step, layer, image, metric, value)."""
        _CURVES.append(frame.assign(suite=self.suite, test=self.test))

    def benchmark(self, name: str, group: str | None, info: dict, median_s: float):
        """Store one measured benchmark (pytest-benchmark's ``extra_info`` with its ratio);
        the report shows them as :func:`cnnvis_eval.report.benchmarks.benchmark_frame` does."""
        from cnnvis_eval.report.benchmarks import benchmark_row

        _BENCHMARKS.append(benchmark_row(name, group, dict(info), median_s))

    def agreement(self, matrix: pd.DataFrame, model: str, neuron: str = "logit"):
        """Store a method x method agreement matrix."""
        long = matrix.reset_index(names="method_a").melt(id_vars="method_a", var_name="method_b", value_name="value")
        _AGREEMENT.append(long.assign(model=model, neuron=neuron))


@pytest.fixture
def record(request) -> Recorder:
    return Recorder(request.node)


@pytest.fixture(scope="module")
def module_record(request) -> Recorder:
    """``record`` for module-scoped fixtures (rows are attributed to the test module)."""
    return Recorder(request.node)


def results_frame() -> pd.DataFrame:
    return pd.concat(_ROWS, ignore_index=True) if _ROWS else pd.DataFrame(columns=COLUMNS)


_OUTPUT_KEY = "cnnvis_record"


def _collected() -> dict:
    return {"rows": _ROWS, "curves": _CURVES, "agreement": _AGREEMENT, "benchmarks": _BENCHMARKS}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: take over the rows a worker recorded."""
    blob = getattr(node, "workeroutput", {}).get(_OUTPUT_KEY)
    if blob:
        for name, items in pickle.loads(blob).items():
            _collected()[name].extend(items)


def pytest_sessionfinish(session, exitstatus):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller writes the files
        workeroutput[_OUTPUT_KEY] = pickle.dumps(_collected())
        return
    if not _ROWS:
        return
    results = results_frame()
    out = Path(session.config.rootpath) / "reports" / "suite"
    targets = [out]
    extra = session.config.getoption("--cnnvis-report")
    if extra:
        targets.append(Path(extra))
    for d in targets:
        d.mkdir(parents=True, exist_ok=True)
        results.to_parquet(d / "results.parquet", index=False)
        results.to_csv(d / "results.csv", index=False)
        if _CURVES:
            pd.concat(_CURVES, ignore_index=True).to_parquet(d / "curves.parquet", index=False)
        if _AGREEMENT:
            pd.concat(_AGREEMENT, ignore_index=True).to_parquet(d / "agreement.parquet", index=False)
        if _BENCHMARKS:
            from cnnvis_eval.report.benchmarks import COLUMNS as BENCH_COLUMNS

            pd.DataFrame(_BENCHMARKS, columns=BENCH_COLUMNS).to_parquet(d / "benchmarks.parquet", index=False)
    if extra:
        from cnnvis_eval.report import build_report

        page = build_report(extra, title="cnnvis_eval suite report")
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"cnnvis_eval suite report: {page}")
