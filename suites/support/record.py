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

The outcomes of the tests parametrized by a method become verdicts for the report's
scorecard (:func:`suite_verdict`): check ``"<suite folder>.<test function>"``, status
``pass`` / ``fail`` / ``fail`` with the xfail reason as ``known_failure`` / ``n/a`` (skipped,
with the reason), written with :func:`cnnvis_eval.testing.verdict_frame` to
``verdicts.parquet`` (and CSV) beside the results, before the report is built.
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
_VERDICTS: list = []  # cnnvis_eval.testing.Verdict of the tests parametrized by a method
METHOD_PARAMS = ("method", "preset")
"""Parameter names that name the method a test checks (the first present wins)."""
MODEL_PARAMS = ("model", "arch", "name")
"""Parameter names that name the model, when the test also has a method parameter."""


def pytest_addhooks(pluginmanager):
    """``--cnnvis-report`` belongs to the package's pytest entry point (:mod:`pytest_cnnvis_eval`,
    ``pytest11: pytest_cnnvis_eval``); register it here when it is not loaded yet (a checkout
    without the entry point installed, or ``-p suites.support.record`` alone)."""
    import pytest_cnnvis_eval

    name = "pytest_cnnvis_eval"
    if not pluginmanager.is_registered(pytest_cnnvis_eval) and not pluginmanager.is_blocked(name):
        pluginmanager.register(pytest_cnnvis_eval, name)


def _suite_of(node) -> str:
    """The suite folder of a test (``sanity``, ``unit``, ...): the folder under ``suites/``."""
    parts = Path(str(node.fspath)).parts
    return parts[parts.index("suites") + 1] if "suites" in parts else "suites"


class Recorder:
    def __init__(self, node):
        self.node = node
        self.suite = _suite_of(node)
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


def _message(report) -> str:
    """The first line of why a test failed or was skipped."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, "Skipped: reason")
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(longrepr or "")
    return (text.strip().splitlines() or [""])[0][:300]


def suite_verdict(item, report):
    """The verdict a test's outcome gives its method, or None.

    Only tests parametrized by a method (:data:`METHOD_PARAMS`) give one, and only from the
    call phase or a skip in setup: passed -> ``pass``; failed (a strict XPASS included) ->
    ``fail`` with the failure's first line; xfailed -> ``fail`` with the xfail reason as
    ``known_failure``; an unexpected pass of a non-strict xfail -> ``pass``; skipped ->
    ``n/a`` with the reason.  The check is ``"<suite folder>.<test function>"``; the model
    comes from :data:`MODEL_PARAMS` ("" without one).
    """
    if not (report.when == "call" or (report.when == "setup" and report.skipped)):
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    method = next((params[k] for k in METHOD_PARAMS if isinstance(params.get(k), str)), None)
    if method is None:
        return None
    model = next((params[k] for k in MODEL_PARAMS if isinstance(params.get(k), str)), "")
    from cnnvis_eval.testing.verdict import Verdict

    check = f"{_suite_of(item)}.{getattr(item, 'originalname', item.name)}"
    xfail = getattr(report, "wasxfail", None)
    if xfail is not None and report.skipped:
        reason = str(xfail).removeprefix("reason: ") or "expected to fail (xfail without a reason)"
        return Verdict(model, method, check, "fail", reason="xfail", known_failure=reason)
    if report.skipped:
        return Verdict(model, method, check, "n/a", reason=_message(report) or "skipped")
    if report.failed:
        return Verdict(model, method, check, "fail", reason=_message(report))
    return Verdict(model, method, check, "pass")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep the verdict of every test parametrized by a method (where the test runs: the
    worker under pytest-xdist)."""
    report = yield
    verdict = suite_verdict(item, report)
    if verdict is not None:
        _VERDICTS.append(verdict)
    return report


_OUTPUT_KEY = "cnnvis_record"


def _collected() -> dict:
    return {"rows": _ROWS, "curves": _CURVES, "agreement": _AGREEMENT, "benchmarks": _BENCHMARKS,
            "verdicts": _VERDICTS}


def verdicts_frame(config, out: Path | None) -> pd.DataFrame:
    """The suite's verdicts as a verdict frame, after those the installed plugin wrote to
    ``out/verdicts.parquet`` in this session (``--cnnvis-model``: its sessionfinish runs first)."""
    from cnnvis_eval.testing.verdict import verdict_frame

    table = verdict_frame(_VERDICTS)
    plugin_file = out / "verdicts.parquet" if out is not None else None
    if config.getoption("--cnnvis-model", None) and plugin_file is not None and plugin_file.is_file():
        table = pd.concat([pd.read_parquet(plugin_file), table], ignore_index=True)
    return table


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
    if not (_ROWS or _VERDICTS):
        return
    results = results_frame()
    out = Path(session.config.rootpath) / "reports" / "suite"
    targets = [out]
    extra = session.config.getoption("--cnnvis-report")
    if extra:
        targets.append(Path(extra))
    verdicts = verdicts_frame(session.config, Path(extra) if extra else None)
    for d in targets:
        d.mkdir(parents=True, exist_ok=True)
        if _ROWS:
            results.to_parquet(d / "results.parquet", index=False)
            results.to_csv(d / "results.csv", index=False)
        if len(verdicts):
            verdicts.to_parquet(d / "verdicts.parquet", index=False)
            verdicts.to_csv(d / "verdicts.csv", index=False)
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
