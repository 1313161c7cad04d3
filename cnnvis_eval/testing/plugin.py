"""pytest plugin: the sanity checks of :mod:`cnnvis_eval.testing.checks` on *your* model.

Loaded by the package's pytest entry point (``pytest11: pytest_cnnvis_eval``, the top-level
module :mod:`pytest_cnnvis_eval`, which defines the options) when ``--cnnvis-model`` is given::

    pytest --cnnvis-model path/model.keras --cnnvis-images path/folder_or.npz \\
           [--cnnvis-methods grad_cam,saliency] [--cnnvis-checks randomization,faithfulness.road] \\
           [--cnnvis-masks DIR_OR_NPZ] [--cnnvis-preprocess -1,1] [--cnnvis-classes cat,dog] \\
           [--cnnvis-output LAYER] [--cnnvis-custom-object MODULE:NAME] [--cnnvis-input-shape H,W,C] \\
           [--cnnvis-report DIR]

Each ``--cnnvis-model`` adds the checks of :mod:`cnnvis_eval.testing.suite` (a test file of
the installed package, collected after the user's own tests), one test per (check,
variant, method): ``test_randomization[grad_cam-cascading_top]`` (with several models, the
model file's stem comes first).  ``pass`` passes, ``fail`` fails with the measured value,
threshold and controls, a failure the literature predicts is an ``xfail`` with its citation,
``inconclusive`` and ``n/a`` are skips with their reason.  ``--cnnvis-report DIR`` writes the
verdicts to ``DIR/verdicts.parquet`` (and CSV) and the HTML report ``DIR/index.html`` (as
``cnnvis-eval check`` does); in this repository the suite's record plugin
(``suites/support/record.py``) then adds its measurements to the same DIR and rebuilds the report.

Without ``--cnnvis-model`` this module is not even imported: the entry point module imports
nothing of ``cnnvis_eval`` (whose ``__init__`` loads TensorFlow), so a pytest run that does not
ask for the checks pays nothing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

SUITE = Path(__file__).with_name("suite.py")
_OUTPUT_KEY = "cnnvis_verdicts"
_VERDICTS: list = []
_CONTEXTS: dict = {}
_CASES = pytest.StashKey[list]()
_PARAMS = pytest.StashKey[dict]()


def _shape(text: str | None):
    if not text:
        return None
    try:
        shape = tuple(int(p) for p in text.split(","))
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError
        return shape
    except ValueError:
        raise pytest.UsageError(f"--cnnvis-input-shape must be H,W,C, got {text!r}") from None


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _cases(config) -> list[tuple[str, str, str, str | None]]:
    """(model file, check, method, variant) for every selected check, variant and method."""
    from cnnvis_eval.errors import InputError

    from .session import parse_params, select_cases, selected_checks, selected_methods

    checks = _split(config.getoption("--cnnvis-checks")) or None
    methods = _split(config.getoption("--cnnvis-methods")) if config.getoption("--cnnvis-methods") else None
    for option, validate, value in (("--cnnvis-checks", selected_checks, checks),
                                    ("--cnnvis-methods", selected_methods, methods)):
        try:
            validate(value)
        except InputError as err:
            raise pytest.UsageError(f"{option}: {err}") from None
    cases = select_cases(checks, methods)
    try:
        config.stash[_PARAMS] = parse_params(config.getoption("--cnnvis-param"), sorted({m for _, m, _ in cases}))
    except InputError as err:
        raise pytest.UsageError(f"--cnnvis-param: {err}") from None
    return [(model, check, method, variant) for model in config.getoption("--cnnvis-model")
            for check, method, variant in cases]


def pytest_configure(config):
    models = config.getoption("--cnnvis-model")
    if not models:
        return
    if not config.getoption("--cnnvis-images"):
        raise pytest.UsageError("--cnnvis-model needs --cnnvis-images (a folder of JPEG/PNG images or an .npz)")
    for m in models:
        if not Path(m).is_file():
            raise pytest.UsageError(f"--cnnvis-model: model file {m!r} does not exist")
    _shape(config.getoption("--cnnvis-input-shape"))  # a usage error now, not in every test
    config.stash[_CASES] = _cases(config)


def pytest_generate_tests(metafunc):
    if "cnnvis_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    check = metafunc.function.__name__.removeprefix("test_")
    several = len(config.getoption("--cnnvis-model")) > 1
    params = []
    for model, c, method, variant in config.stash.get(_CASES, []):
        if c != check:
            continue
        parts = ([Path(model).stem] if several else []) + [method] + ([variant] if variant else [])
        params.append(pytest.param((model, c, method, variant), id="-".join(parts),
                                   marks=pytest.mark.xdist_group(f"cnnvis:{model}")))
    metafunc.parametrize("cnnvis_case", params)


@pytest.hookimpl(tryfirst=True)  # before -k / -m selection and other plugins see the items
def pytest_collection_modifyitems(session, config, items):
    """Add the checks (the test functions of :mod:`cnnvis_eval.testing.suite`, parametrized by
    :func:`pytest_generate_tests`) to the collected items, and drop the check functions that no
    selected case parametrizes.

    The suite module is collected directly under the session, not by walking the folders
    above it: in an editable install or a checkout those folders hold this repository's
    ``conftest.py``, which must not become a conftest of the user's run.
    """
    if not config.stash.get(_CASES, None) or any(i.path == SUITE for i in items):
        return
    module = pytest.Module.from_parent(session, path=SUITE, nodeid="cnnvis_eval.testing.suite")
    new = [i for i in module.collect() if isinstance(i, pytest.Item)]
    empty = [i for i in new if not isinstance(
        getattr(getattr(i, "callspec", None), "params", {}).get("cnnvis_case"), tuple)]
    items.extend(i for i in new if i not in empty)


def context(config, model: str):
    """The CheckContext of ``model`` (loaded once per session and process)."""
    if model not in _CONTEXTS:
        from cnnvis_eval.errors import InputError

        from .session import open_context, validate_params

        try:
            _CONTEXTS[model] = open_context(model, config.getoption("--cnnvis-images"),
                                            masks=config.getoption("--cnnvis-masks"),
                                            preprocess=config.getoption("--cnnvis-preprocess"),
                                            classes=_split(config.getoption("--cnnvis-classes")),
                                            output=config.getoption("--cnnvis-output"),
                                            output_flag="--cnnvis-output",
                                            custom_objects=config.getoption("--cnnvis-custom-object"),
                                            input_shape=_shape(config.getoption("--cnnvis-input-shape")),
                                            params=config.stash.get(_PARAMS, {}))
            validate_params(_CONTEXTS[model], sorted({m for _, _, m, _ in config.stash.get(_CASES, [])}))
        except InputError as err:
            _CONTEXTS[model] = err
    ctx = _CONTEXTS[model]
    if isinstance(ctx, Exception):
        pytest.fail(f"cnnvis_eval: {ctx}", pytrace=False)
    return ctx


def run_case(request, case) -> None:
    """Run one check and turn its verdict into the test's outcome."""
    from .checks import run_check

    model, check, method, variant = case
    v = run_check(context(request.config, model), check, method, variant)
    _VERDICTS.append(v)
    request.node.user_properties.append(("cnnvis_verdict", v.message()))
    msg = v.message()
    if v.status == "fail":
        if v.known_failure:
            pytest.xfail(msg)
        pytest.fail(msg, pytrace=False)
    if v.status in ("inconclusive", "n/a"):
        pytest.skip(msg)


@pytest.fixture
def cnnvis_case(request):
    """(model file, check, method, variant) of one parametrized check."""
    return request.param


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: collect the verdicts of a worker."""
    blob = getattr(node, "workeroutput", {}).get(_OUTPUT_KEY)
    if blob:
        _VERDICTS.extend(pickle.loads(blob))


@pytest.hookimpl(tryfirst=True)  # before a report is built from the same folder
def pytest_sessionfinish(session, exitstatus):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_OUTPUT_KEY] = pickle.dumps(_VERDICTS)
        return
    out = session.config.getoption("--cnnvis-report")
    if not (_VERDICTS and out):
        return
    from .session import write_check_folder

    opt = session.config.getoption
    config = {"command": "pytest", "models": sorted({v.model for v in _VERDICTS}),
              "model_files": [str(Path(m).resolve()) for m in opt("--cnnvis-model")],
              "images": opt("--cnnvis-images"), "masks": opt("--cnnvis-masks"),
              "methods": opt("--cnnvis-methods") or "default", "checks": opt("--cnnvis-checks") or "all",
              "preprocess": opt("--cnnvis-preprocess"), "output": opt("--cnnvis-output"),
              "param": list(opt("--cnnvis-param"))}
    page = write_check_folder(out, _VERDICTS, config)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"cnnvis_eval report: {page}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _VERDICTS:
        return
    terminalreporter.section("cnnvis_eval verdicts")
    for v in _VERDICTS:
        terminalreporter.write_line(v.message())
