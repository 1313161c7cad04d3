"""Benchmark v2 as one labelled set: single shapes, multi-object scenes and part-based birds.

The clean mini models (:mod:`cnnvis_eval.models.mini`) are trained on this mixture, so one
model can be asked every benchmark-v2 question: the single shapes of
:mod:`.synthetic` (localization against one object mask), the scenes of :mod:`.scenes`
(2-3 shapes of different classes: is the map for class A on object A?) and the birds of
:mod:`.parts` (which part does the model need?).  The label space is :data:`CLASSES_V2`:
the four shapes, then the four bird classes.  Targets are **multi-hot** ``(N, 8)``: a
scene is labelled with every class it holds, a single shape or bird with its one class;
the models are trained with a per-class sigmoid loss on linear heads (the logits stay the
explained quantity).

Everything is drawn from ``numpy.random.default_rng``: the same arguments give identical
arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..params import integer
from .parts import PART_CLASSES, make_parts
from .scenes import make_scenes
from .synthetic import CLASSES, make_synthetic

CLASSES_V2: tuple[str, ...] = tuple(CLASSES) + tuple(PART_CLASSES)
BIRD_OFFSET = len(CLASSES)  # bird class b is CLASSES_V2 index BIRD_OFFSET + b
KINDS = ("shape", "scene", "bird")


@dataclass
class BenchmarkSet:
    """A shuffled mixture of benchmark-v2 images with multi-hot targets.

    Attributes
    ----------
    images : uint8 (N, H, W, 3)
    targets : float32 (N, 8)
        1 for every class present (:data:`CLASSES_V2` order), else 0.
    kind : str (N,)
        ``"shape"``, ``"scene"`` or ``"bird"``.
    """

    images: np.ndarray
    targets: np.ndarray
    kind: np.ndarray
    seed: int
    size: int
    classes: tuple[str, ...] = CLASSES_V2

    def __len__(self) -> int:
        return len(self.images)


def make_benchmark(n_shapes: int, n_scenes: int, n_birds: int, size: int = 64, seed: int = 0) -> BenchmarkSet:
    """``n_shapes`` single shapes, ``n_scenes`` scenes and ``n_birds`` birds, shuffled.

    The three parts are drawn from seeds ``seed``, ``seed + 1`` and ``seed + 2``; the
    shuffle from ``seed + 3``.
    """
    counts = [integer(v, what, minimum=0) for v, what in ((n_shapes, "n_shapes"), (n_scenes, "n_scenes"),
                                               (n_birds, "n_birds"))]
    if sum(counts) == 0:
        raise InputError("make_benchmark needs at least one image (n_shapes + n_scenes + n_birds > 0)")
    k = len(CLASSES_V2)
    images, targets, kinds = [], [], []
    if counts[0]:
        s = make_synthetic(counts[0], size, seed=seed)
        images.append(s.images)
        targets.append(np.eye(k, dtype=np.float32)[s.labels])
        kinds += ["shape"] * counts[0]
    if counts[1]:
        s = make_scenes(counts[1], size, seed=seed + 1)
        t = np.zeros((counts[1], k), np.float32)
        for i, cls in enumerate(s.object_classes):
            t[i, cls] = 1.0
        images.append(s.images)
        targets.append(t)
        kinds += ["scene"] * counts[1]
    if counts[2]:
        s = make_parts(counts[2], size, seed=seed + 2)
        images.append(s.images)
        targets.append(np.eye(k, dtype=np.float32)[BIRD_OFFSET + s.labels])
        kinds += ["bird"] * counts[2]
    order = np.random.default_rng(seed + 3).permutation(sum(counts))
    return BenchmarkSet(np.concatenate(images)[order], np.concatenate(targets)[order],
                        np.array(kinds)[order], seed, size)


def set_accuracy(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per image: 1.0 when the model's top-k logits are exactly the k present classes.

    For a single-object image (k = 1) this is top-1 accuracy; for a scene, the exact
    top-k set.  ``logits`` and ``targets`` are (N, C).
    """
    logits, targets = np.asarray(logits), np.asarray(targets) > 0.5
    k = targets.sum(1)
    order = np.argsort(-logits, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(logits.shape[1])[None].repeat(len(logits), 0), axis=1)
    return ((ranks < k[:, None]) == targets).all(axis=1).astype(np.float64)


__all__ = ["BIRD_OFFSET", "BenchmarkSet", "CLASSES_V2", "KINDS", "make_benchmark", "set_accuracy"]
