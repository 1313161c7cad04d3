"""Bundled photos load offline, with their ImageNet classes."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from cnnvis_eval import errors
from cnnvis_eval.data import photos as P


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", P.list_photos())
def test_every_photo_loads_offline(name, no_network):
    img = P.load_photo(name, size=None)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and min(img.shape[:2]) >= 150
    small = P.load_photo(name, size=(48, 64))
    assert small.shape == (48, 64, 3) and small.dtype == np.uint8
    info = P.photo_info(name)
    assert all(0 <= c < 1000 for c in info.imagenet) and len(info.classes) == len(info.imagenet)


def test_default_set_is_ten_distinct_photos():
    assert len(P.DEFAULT_PHOTOS) == len(set(P.DEFAULT_PHOTOS)) == 10
    batch = P.load_photos(size=64)
    assert batch.shape == (10, 64, 64, 3)
    flat = batch.reshape(10, -1).astype(float)
    assert np.linalg.matrix_rank(flat) == 10  # no two are the same image


def test_center_crop_keeps_the_centre():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 200  # the centre square
    out = P.center_crop_resize(img, 32)
    assert out.min() >= 190  # only the central 100x100 survives the crop


def test_grayscale_becomes_rgb():
    cam = P.load_photo("camera", 32)
    np.testing.assert_array_equal(cam[..., 0], cam[..., 1])


def test_unknown_photo():
    with pytest.raises(errors.InputError, match="unknown photo 'lena'"):
        P.load_photo("lena")
    with pytest.raises(errors.InputError, match="no photo names"):
        P.load_photos([])
