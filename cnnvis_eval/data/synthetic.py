"""Synthetic ground-truth benchmark: shapes on cluttered backgrounds, with object masks.

Each image holds one *target* object whose shape defines the class (:data:`CLASSES`),
drawn opaque in a bright saturated colour, on a textured background with low-contrast
lines and two or three smaller, fainter *distractor* objects of the other classes' shapes.
Position, scale and rotation are random.  The ground-truth mask is the set of pixels the
target object covers in the final image.

The ``shortcut`` variant adds a small white marker square in one of four corner slots.
In the ``"train"`` split the slot is the class (a perfect, irrelevant cue); in the
``"test"`` split the slot is drawn independently of the class — so a model trained on the
train split that relies on the marker fails on the test split, and a faithful explanation
of it puts relevance on the marker (``marker_masks``).

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give
identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import colorsys

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.draw import line, polygon

from ..errors import InputError
from ..params import integer

CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross")
MARKER_SIZE = 5


def shape_polygon(kind: str, cy: float, cx: float, r: float, theta: float) -> np.ndarray:
    """Vertices (K, 2) as (row, col) of a shape of "radius" ``r`` rotated by ``theta``."""
    if kind == "disc":
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.sin(a), np.cos(a)], 1) * r
    elif kind == "square":
        a = theta + np.pi / 4 + np.arange(4) * np.pi / 2
        pts = np.stack([np.sin(a), np.cos(a)], 1) * r
    elif kind == "triangle":
        a = theta + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.sin(a), np.cos(a)], 1) * r * 1.15
    elif kind == "cross":
        w = 0.34 * r
        base = np.array([[w, r], [w, w], [r, w], [r, -w], [w, -w], [w, -r],
                         [-w, -r], [-w, -w], [-r, -w], [-r, w], [-w, w], [-w, r]])
        c, s = np.cos(theta), np.sin(theta)
        pts = base @ np.array([[c, s], [-s, c]])
    else:
        raise InputError(f"unknown shape {kind!r}; use one of {CLASSES}")
    return pts + np.array([cy, cx])


def shape_area(kind: str, r: float) -> float:
    """Analytic area of :func:`shape_polygon` (for mask tests)."""
    if kind == "disc":
        return 48 / 2 * r * r * np.sin(2 * np.pi / 48)
    if kind == "square":
        return 2 * r * r
    if kind == "triangle":
        s = r * 1.15
        return 3 * np.sqrt(3) / 4 * s * s
    if kind == "cross":
        w = 0.34 * r
        return 4 * (2 * w) * r - 4 * w * w
    raise InputError(f"unknown shape {kind!r}")


def _hsv(h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


@dataclass
class SyntheticSet:
    """A generated dataset.

    Attributes
    ----------
    images : uint8 (N, H, W, 3)
    labels : int64 (N,)
    masks : bool (N, H, W)
        Pixels of the target object.
    marker_masks : bool (N, H, W) or None
        Pixels of the shortcut marker (shortcut variant only).
    marker_slots : int64 (N,) or None
        Corner slot of the marker (0..3).
    objects : list of dict
        Per image: target shape, centre, radius, rotation, colour (for tests and plots).
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    marker_masks: np.ndarray | None
    marker_slots: np.ndarray | None
    objects: list
    seed: int
    size: int
    shortcut: bool
    split: str
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.labels)


def marker_slot_box(slot: int, size: int) -> tuple[slice, slice]:
    """Row/column slices of the marker in corner ``slot`` (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right)."""
    m, inset = MARKER_SIZE, 2
    r0 = inset if slot in (0, 1) else size - inset - m
    c0 = inset if slot in (0, 2) else size - inset - m
    return slice(r0, r0 + m), slice(c0, c0 + m)


def make_synthetic(
    n: int,
    size: int = 64,
    seed: int = 0,
    shortcut: bool = False,
    split: str = "train",
) -> SyntheticSet:
    """Generate ``n`` images (balanced classes) with masks.

    Parameters
    ----------
    n : int
    size : int
        Image side in pixels (64 to 128).
    seed : int
    shortcut : bool
        Add the class-correlated marker (see module docstring).
    split : {"train", "test"}
        Only matters with ``shortcut``: marker slot = class (train) or random (test).
    """
    n = integer(n, "n")
    if not 48 <= size <= 128:
        raise InputError(f"size must be between 48 and 128 pixels, got {size}")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    labels = rng.permutation(np.arange(n) % k)

    # textured background: coloured base + smooth noise, one batched filter for all images
    base = np.stack([_hsv(h, s, v) for h, s, v in zip(rng.uniform(0, 1, n), rng.uniform(0.2, 0.6, n),
                                                      rng.uniform(0.25, 0.5, n))])
    noise = gaussian_filter(rng.normal(0, 1, (n, size, size, 3)).astype(np.float32), sigma=(0, 1.5, 1.5, 0))
    noise *= 28.0 / (noise.std() + 1e-9)
    images = base[:, None, None, :] + noise
    masks = np.zeros((n, size, size), bool)
    marker_masks = np.zeros((n, size, size), bool) if shortcut else None
    slots = None
    if shortcut:
        slots = labels.copy() if split == "train" else rng.integers(0, 4, n)
    objects = []
    for i in range(n):
        img = images[i]
        for _ in range(rng.integers(5, 9)):  # clutter lines
            r0, c0, r1, c1 = rng.integers(0, size, 4)
            rr, cc = line(r0, c0, r1, c1)
            img[rr, cc] = 0.55 * img[rr, cc] + 0.45 * _hsv(rng.uniform(), 0.4, rng.uniform(0.4, 0.8))
        for _ in range(rng.integers(2, 4)):  # distractors: other classes, smaller and fainter
            kind = CLASSES[rng.choice([c for c in range(k) if c != labels[i]])]
            r = rng.uniform(0.07, 0.11) * size
            cy, cx = rng.uniform(r * 1.3, size - r * 1.3, 2)
            pts = shape_polygon(kind, cy, cx, r, rng.uniform(0, 2 * np.pi))
            rr, cc = polygon(pts[:, 0], pts[:, 1], (size, size))
            img[rr, cc] = 0.6 * img[rr, cc] + 0.4 * _hsv(rng.uniform(), rng.uniform(0.3, 0.7), 0.8)
        kind = CLASSES[labels[i]]
        r = rng.uniform(0.15, 0.24) * size
        margin = r * 1.25 + (MARKER_SIZE + 3 if shortcut else 0)
        cy, cx = rng.uniform(margin, size - margin, 2)
        theta = rng.uniform(0, 2 * np.pi)
        colour = _hsv(rng.uniform(), rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.0))
        pts = shape_polygon(kind, cy, cx, r, theta)
        rr, cc = polygon(pts[:, 0], pts[:, 1], (size, size))
        img[rr, cc] = colour
        masks[i, rr, cc] = True
        if shortcut:
            rs, cs = marker_slot_box(int(slots[i]), size)
            img[rs, cs] = 255.0
            marker_masks[i, rs, cs] = True
            masks[i, rs, cs] = False
        objects.append({"shape": kind, "cy": cy, "cx": cx, "r": r, "theta": theta,
                        "colour": np.round(colour).astype(int)})
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return SyntheticSet(images, labels.astype(np.int64), masks, marker_masks,
                        None if slots is None else slots.astype(np.int64), objects, seed, size,
                        shortcut, split)
