"""Shared pytest fixtures for the cnnvis_eval suites (fixtures only: helpers live in suites/support/).

Models are cached for the whole session in one cache (``suites.support.models``: building and
tracing them is the expensive part).  Parametrized ids read as names: ``vgg16@96``, ``mini_resnet``.

The suites run in worker processes (pytest-xdist, ``-n auto --dist loadgroup`` in pyproject).
:func:`pytest_collection_modifyitems` asks for one unit of work per test module (so its module
fixtures are built once) and one for the modules that share the heatmaps of
``suites.support.suite_data``; but pytest-xdist 3.8 marks a group by rewriting ``item._nodeid``,
which pytest 9.2 no longer reads (node ids live in ``item._id``), so today the groups are
ignored and tests are spread one by one.  The shared heatmaps are therefore also kept in a
folder of the session that every worker reads (:mod:`suites.support.shared_cache`, set up by
:func:`pytest_configure`): measured on the localization and faithfulness suites with two
workers, 102 of 354 heatmap computations were found there instead of computed again.
"""

from __future__ import annotations

import cnnvis_eval as cv  # first: imports TensorFlow quietly (cnnvis_eval.quiet)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from suites.support import tiny  # noqa: E402
from suites.support.images import smooth_images  # noqa: E402
from suites.support.models import MINI_SHORTCUT, big_params, big_spec, mini_params, mini_spec  # noqa: E402

pytest_plugins = ["suites.support.record"]


def pytest_configure(config):
    """On the controller (or a run without xdist): a folder for the arrays the xdist workers
    share this session (:mod:`suites.support.shared_cache`), inherited through the
    environment by the workers, which start after this hook."""
    import os
    import tempfile

    from suites.support import shared_cache

    if hasattr(config, "workerinput") or shared_cache.ENV in os.environ:
        return
    config._cnnvis_shared = tempfile.mkdtemp(prefix="cnnvis-suite-shared-")
    os.environ[shared_cache.ENV] = config._cnnvis_shared


def pytest_unconfigure(config):
    import os
    import shutil

    from suites.support import shared_cache

    folder = getattr(config, "_cnnvis_shared", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(shared_cache.ENV, None)

SHARED_HEATMAPS = "suites.support.suite_data"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Group the tests for pytest-xdist's ``loadgroup``: one group per module, and one group
    for all the modules that use the shared heatmaps of ``suites.support.suite_data``."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        module = getattr(item, "module", None)
        shares = module is not None and any(getattr(v, "__module__", None) == SHARED_HEATMAPS
                                            for v in vars(module).values())
        name = "suite_data" if shares else (module.__name__ if module is not None else item.nodeid)
        item.add_marker(pytest.mark.xdist_group(name))


@pytest.fixture(scope="session", params=big_params())
def big_model(request) -> cv.ModelSpec:
    """Each of the five architectures at 96 px with random weights."""
    return big_spec(request.param)


@pytest.fixture(scope="session")
def big_input():
    """``big_input(spec, n=2)``: n preprocessed smooth test images for ``spec``."""

    def make(spec: cv.ModelSpec, n: int = 2, seed: int = 0) -> np.ndarray:
        return spec.preprocess(smooth_images(n, spec.input_shape[0], seed))

    return make


@pytest.fixture(scope="session", params=mini_params())
def mini_model(request) -> cv.ModelSpec:
    """Each of the five trained mini models (64 px, four shape classes)."""
    return mini_spec(request.param)


@pytest.fixture(scope="session", params=mini_params(MINI_SHORTCUT))
def shortcut_model(request) -> cv.ModelSpec:
    """Each mini model trained on the shortcut variant (a class-revealing corner marker)."""
    return mini_spec(request.param)


@pytest.fixture(scope="session")
def synthetic_batch():
    """16 synthetic test images (seed never used in training) with labels and object masks."""
    from cnnvis_eval.data.synthetic import make_synthetic

    return make_synthetic(16, 64, seed=4242)


@pytest.fixture(scope="session")
def photos():
    """``photos(size, names=None)``: the default ten bundled photos as uint8 (N, size, size, 3)."""
    from cnnvis_eval.data.photos import load_photos

    cache = {}

    def get(size: int = 64, names=None):
        key = (size, tuple(names) if names else None)
        if key not in cache:
            cache[key] = load_photos(names, size)
        return cache[key].copy()

    return get


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny hand-set float64 CNN (conv-relu, conv, ReLU6, max-pool, dense)."""
    return tiny.tiny_cnn()


@pytest.fixture(scope="session")
def tiny_x():
    return tiny.tiny_input()
