"""The suites' models, loaded once per session in one cache (shared by conftest.py's fixtures,
the support modules and the test files): the five architectures with random seeded weights
(``big_spec``), the trained mini models (``mini_spec``), and readable pytest ids for both.
"""

from __future__ import annotations

from typing import Callable, Hashable

import keras
import pytest

import cnnvis_eval as cv

BIG = ("vgg16", "inception_v3", "xception", "resnet50", "mobilenet_v2")
BIG_SIZE = 96
MINI = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
MINI_SHORTCUT = tuple(f"{n}_shortcut" for n in MINI)

_SPECS: dict = {}


def cached(key: Hashable, build: Callable[[], object]):
    """The session's one model cache: ``build()`` once per ``key``, then the same object."""
    if key not in _SPECS:
        _SPECS[key] = build()
    return _SPECS[key]


def big_spec(name: str, size: int = BIG_SIZE) -> cv.ModelSpec:
    """One of the five architectures with random (seeded) weights, cached per session."""

    def build():
        keras.utils.set_random_seed(0)
        return cv.load_model(name, weights=None, input_shape=(size, size, 3))

    return cached((name, size), build)


def big_params(size: int = BIG_SIZE, marks=()):
    return [pytest.param(n, id=f"{n}@{size}", marks=marks) for n in BIG]


def mini_spec(name: str) -> cv.ModelSpec:
    """A trained mini model shipped in the package (see cnnvis_eval.models.mini), cached per session."""
    return cached(name, lambda: cv.load_model(name))


def mini_params(names=MINI, marks=()):
    return [pytest.param(n, id=n, marks=marks) for n in names]


def mtcnn_onet():
    """MTCNN's ONet with the trained weights shipped in the ``mtcnn`` wheel (a subclassed
    Keras 3 model, three outputs, PReLU), built for (None, 48, 48, 3) as mtcnn's own stage
    does; skips the test when ``mtcnn`` or ``lz4`` is missing.  A fresh model per call (the
    tests that save it or explain it must not share state)."""
    import pytest

    pytest.importorskip("mtcnn")
    pytest.importorskip("lz4")
    from mtcnn.network.onet import ONet
    from mtcnn.utils.tensorflow import load_weights

    model = ONet()
    model.build()
    model.set_weights(load_weights("onet.lz4"))
    return model


def astronaut_face():
    """The astronaut's face from scikit-image: uint8 (140, 130, 3)."""
    from skimage import data

    return data.astronaut()[40:180, 170:300]
