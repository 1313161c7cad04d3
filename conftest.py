"""Shared pytest fixtures for the cnnvis_eval suites.

Models are cached for the whole session (building and tracing them is the expensive part).
Parametrized ids read as names: ``vgg16@96``, ``mini_resnet``.
"""

from __future__ import annotations

import cnnvis_eval as cv  # first: imports TensorFlow quietly (cnnvis_eval.quiet)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from suites.support import tiny  # noqa: E402

pytest_plugins = ["suites.support.record"]

BIG = ("vgg16", "inception_v3", "xception", "resnet50", "mobilenet_v2")
BIG_SIZE = 96

_SPECS: dict = {}


def big_spec(name: str, size: int = BIG_SIZE) -> cv.ModelSpec:
    """One of the five architectures with random (seeded) weights, cached per session."""
    key = (name, size)
    if key not in _SPECS:
        keras.utils.set_random_seed(0)
        _SPECS[key] = cv.load_model(name, weights=None, input_shape=(size, size, 3))
    return _SPECS[key]


def big_params(size: int = BIG_SIZE, marks=()):
    return [pytest.param(n, id=f"{n}@{size}", marks=marks) for n in BIG]


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth uint8 RGB images (blurred noise plus a bright blob), (n, size, size, 3)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    imgs = rng.normal(0, 1, (n, size, size, 3))
    imgs = gaussian_filter(imgs, sigma=(0, size / 16, size / 16, 0))
    imgs = (imgs - imgs.min()) / (np.ptp(imgs) + 1e-9)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        imgs[i] += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))[..., None]
    imgs = imgs / imgs.max()
    return (imgs * 255).astype(np.uint8)


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


def mini_spec(name: str) -> cv.ModelSpec:
    """A committed trained mini model (see cnnvis_eval.models.mini), cached per session."""
    if name not in _SPECS:
        _SPECS[name] = cv.load_model(name)
    return _SPECS[name]


MINI = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
MINI_SHORTCUT = tuple(f"{n}_shortcut" for n in MINI)


def mini_params(names=MINI, marks=()):
    return [pytest.param(n, id=n, marks=marks) for n in names]


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
