"""Benchmark v2 scenes: several objects of different classes per image, each with its mask.

Each image holds 2-3 objects (``n_objects``) of *different* classes, the shapes of
:data:`cnnvis_eval.data.synthetic.CLASSES`, at random scale, position and rotation, drawn
opaque in bright colours that do not depend on the class, over a textured background with
clutter lines and faint blobs.  Objects are drawn in order and may overlap: a later object
hides part of an earlier one (at most ``max_occlusion`` of any object's area is hidden).
``object_masks[i][k]`` holds the pixels of object k that are *visible* in the final image.

A class-discriminative explanation of class A puts its mass on the object of class A;
:meth:`SceneSet.contrast_masks` gives, for one chosen object per image, its mask and the
union of the others' masks, as the class-contrast metrics of
:mod:`cnnvis_eval.metrics.localization` take them.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give
identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.draw import disk, line, polygon

from ..errors import InputError
from ..params import integer
from .synthetic import CLASSES, _hsv, shape_polygon

_PLACEMENT_TRIES = 50


@dataclass
class SceneSet:
    """Generated multi-object scenes.

    Attributes
    ----------
    images : uint8 (N, H, W, 3)
    object_masks : list of N bool arrays (K_i, H, W)
        Visible pixels of each object of image i (K_i = 2 or 3), in drawing order;
        the masks of one image are disjoint.
    object_classes : list of N int64 arrays (K_i,)
        Class index (into ``classes``) of each object; distinct within an image.
    objects : list of N lists of dict
        Per object: shape, centre, radius, rotation, colour (for plots and tests).
    """

    images: np.ndarray
    object_masks: list
    object_classes: list
    objects: list
    seed: int
    size: int
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def contrast_masks(self, which) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For object ``which[i]`` of each image i: ``(mask (N, H, W) bool, other_mask
        (N, H, W) bool, labels (N,) int64)`` — its pixels, the other objects' pixels, and
        its class (the class to explain)."""
        which = np.broadcast_to(np.asarray(which), (len(self),))
        if which.dtype.kind not in "iu":
            raise InputError(f"which must hold object indices (integers), got dtype {which.dtype}")
        mask = np.zeros(self.images.shape[:3], bool)
        other = np.zeros_like(mask)
        labels = np.zeros(len(self), np.int64)
        for i, (masks, k) in enumerate(zip(self.object_masks, which)):
            if not 0 <= k < len(masks):
                raise InputError(f"image {i} has {len(masks)} objects; object index {int(k)} is out of range")
            mask[i] = masks[k]
            other[i] = np.delete(masks, k, axis=0).any(0)
            labels[i] = self.object_classes[i][k]
        return mask, other, labels


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Textured float backgrounds (n, size, size, 3): muted base colour, smooth noise, blobs."""
    base = np.stack([_hsv(h, s, v) for h, s, v in zip(rng.uniform(0, 1, n), rng.uniform(0.2, 0.6, n),
                                                      rng.uniform(0.25, 0.5, n))])
    noise = gaussian_filter(rng.normal(0, 1, (n, size, size, 3)).astype(np.float32), sigma=(0, 1.5, 1.5, 0))
    noise *= 28.0 / (noise.std() + 1e-9)
    images = base[:, None, None, :] + noise
    for img in images:
        for _ in range(rng.integers(3, 6)):  # faint blobs
            rr, cc = disk(tuple(rng.uniform(0, size, 2)), rng.uniform(0.05, 0.12) * size, shape=(size, size))
            img[rr, cc] = 0.7 * img[rr, cc] + 0.3 * _hsv(rng.uniform(), 0.4, rng.uniform(0.3, 0.6))
        for _ in range(rng.integers(5, 9)):  # clutter lines
            r0, c0, r1, c1 = rng.integers(0, size, 4)
            rr, cc = line(r0, c0, r1, c1)
            img[rr, cc] = 0.55 * img[rr, cc] + 0.45 * _hsv(rng.uniform(), 0.4, rng.uniform(0.4, 0.8))
    return images


def _place(rng, kind, size, visible, max_occlusion):
    """Draw a pose whose object leaves every earlier object at least 1 - max_occlusion visible;
    returns (pixels (rr, cc), pose dict) or None."""
    for _ in range(_PLACEMENT_TRIES):
        r = rng.uniform(0.12, 0.2) * size
        cy, cx = rng.uniform(r, size - r, 2)
        theta = rng.uniform(0, 2 * np.pi)
        rr, cc = polygon(*shape_polygon(kind, cy, cx, r, theta).T, (size, size))
        cover = np.zeros((size, size), bool)
        cover[rr, cc] = True
        if all((m & ~cover).sum() >= (1 - max_occlusion) * area for m, area in visible):
            return (rr, cc), {"shape": kind, "cy": cy, "cx": cx, "r": r, "theta": theta}
    return None


def make_scenes(n: int, size: int = 64, seed: int = 0, n_objects: tuple[int, int] = (2, 3),
                max_occlusion: float = 0.4) -> SceneSet:
    """Generate ``n`` multi-object scenes with per-object masks and classes.

    Parameters
    ----------
    n : int
    size : int
        Image side in pixels (48 to 128).
    seed : int
    n_objects : (int, int)
        Least and most objects per image (each drawn uniformly); 2 <= least <= most <= 4
        (one object per class at most).
    max_occlusion : float in [0, 0.9]
        Largest fraction of an object's area that later objects may hide; 0 keeps objects apart.
    """
    n = integer(n, "n")
    if not 48 <= size <= 128:
        raise InputError(f"size must be between 48 and 128 pixels, got {size}")
    bad = InputError(f"n_objects must be (least, most) with 2 <= least <= most <= {len(CLASSES)}, "
                     f"got {n_objects!r}")
    try:
        lo, hi = (int(v) for v in n_objects)
    except (TypeError, ValueError):
        raise bad from None
    if not 2 <= lo <= hi <= len(CLASSES):
        raise bad
    if not 0.0 <= max_occlusion <= 0.9:
        raise InputError(f"max_occlusion must be in [0, 0.9], got {max_occlusion!r}")
    rng = np.random.default_rng(seed)
    images = _background(rng, n, size)
    all_masks, all_classes, all_objects = [], [], []
    for i in range(n):
        classes = rng.permutation(len(CLASSES))[: rng.integers(lo, hi + 1)]
        hues = (rng.uniform() + np.arange(len(classes)) / len(classes)) % 1.0  # distinct colours
        visible, objects = [], []  # visible: [(mask, full area)] in drawing order
        for k, c in enumerate(classes):
            placed = _place(rng, CLASSES[c], size, visible, max_occlusion)
            if placed is None:
                raise InputError(f"cannot place {len(classes)} objects in {size} px without hiding more than "
                                 f"{max_occlusion} of one; use a larger size or max_occlusion")
            (rr, cc), pose = placed
            colour = np.round(_hsv(hues[k], rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.0)))
            images[i, rr, cc] = colour
            mask = np.zeros((size, size), bool)
            mask[rr, cc] = True
            for m, _ in visible:
                m &= ~mask
            visible.append((mask, int(mask.sum())))
            objects.append({**pose, "colour": colour.astype(int)})
        all_masks.append(np.stack([m for m, _ in visible]))
        all_classes.append(classes.astype(np.int64))
        all_objects.append(objects)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return SceneSet(images, all_masks, all_classes, all_objects, seed, size)


__all__ = ["SceneSet", "make_scenes"]
