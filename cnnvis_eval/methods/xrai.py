"""XRAI (Kapishnikov et al. 2019): integrated gradients summed over image regions.

As PAIR ``saliency.core.XRAI`` (algorithm ``"full"``):

1. attributions: the mean of integrated gradients from two baselines, the image's minimum
   and its maximum (constant images), reduced to (H, W) by the maximum over channels; our
   batched :class:`~cnnvis_eval.methods.gradient.IntegratedGradients` (midpoint rule; PAIR
   uses ``linspace(0, 1, steps)``, which converges to the same integral);
2. segments: Felzenszwalb's graph segmentation (``skimage``) of the image rescaled to
   [-1, 1] and resized to 224 x 224, at scales 50, 100, 150, 250, 500, 1200 (sigma 0.8,
   minimum size 150), resized back (nearest), every segment a mask dilated by a disk of
   radius 5;
3. greedy: repeatedly add the mask whose new pixels have the highest mean attribution
   (masks adding fewer than ``min_pixel_diff`` new pixels are dropped) until
   ``area_threshold`` of the image is covered; every pixel gets the gain of the mask that
   added it; pixels never added get the mean attribution over them.

The greedy step runs on all remaining masks at once (instead of PAIR's loop over the masks):
each mask's new pixels and their attribution sum are kept and updated by the pixels each added
region covers, the masks within rounding of the best are scored exactly, and ties go to the
first mask, as in PAIR.  Segments are computed once per image
(:func:`segment_masks` keeps the last few); the masks of one scale are dilated together
(:func:`dilated_labels`, equal to skimage's dilation label by label).
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from ..content_cache import ContentCache
from ..params import integer, number
from ..targets import BoundTarget
from .base import BatchResult, Explainer, register
from .gradient import IntegratedGradients

SCALES = (50, 100, 150, 250, 500, 1200)
SEGMENT_SIGMA = 0.8
MIN_SEGMENT = 150
SEGMENT_SIZE = (224, 224)
DILATION = 5


SEGMENT_CACHE = 32  # images whose segments are kept (a grid explains each image for 3 neurons)
SEGMENTS = ContentCache(SEGMENT_CACHE)
"""XRAI's segments of the last :data:`SEGMENT_CACHE` images (see :func:`segment_masks`)."""


def segment_masks(image: np.ndarray) -> np.ndarray:
    """XRAI's candidate regions of one image (H, W, C): (M, H, W) bool masks, in PAIR's
    order (scale by scale, label by label), each dilated by a disk of radius 5.

    The segments depend on the image only, so they are kept in :data:`SEGMENTS`, keyed by a
    digest of the image's bytes, shape and dtype (a grid explains each image for several
    neurons, a randomization curve at every step): the returned array is read-only and
    shared; the seconds a reused one took are tallied (:mod:`cnnvis_eval.content_cache`)."""
    image = np.ascontiguousarray(image)
    key = (image.shape, image.dtype.str, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
    return SEGMENTS.get(key, lambda: _segment_masks(image))


def _segment_masks(image: np.ndarray) -> np.ndarray:
    from skimage import segmentation
    from skimage.transform import resize

    h, w = image.shape[:2]
    im = image.astype(np.float64)
    lo, hi = im.min(), im.max()
    im = (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im)
    im = resize(im * 2.0 - 1.0, SEGMENT_SIZE, order=3, mode="constant", preserve_range=True,
                anti_aliasing=True)
    back = _nearest_index(SEGMENT_SIZE, (h, w))
    masks = []
    for scale in SCALES:
        seg = segmentation.felzenszwalb(im, scale=scale, sigma=SEGMENT_SIGMA, min_size=MIN_SEGMENT)
        masks.append(dilated_labels(seg.reshape(-1)[back], DILATION))
    return np.concatenate(masks)


@functools.lru_cache(maxsize=8)
def _nearest_index(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(dst) int: the pixel of a ``src`` image (raster index) that skimage's nearest-neighbour
    ``resize(..., order=0, mode="constant", anti_aliasing=False)`` puts at each ``dst`` pixel.

    Nearest-neighbour interpolation picks a source pixel by coordinates alone, so resizing the
    image of raster indices (exact in float64) gives them; the label maps are then indexed
    instead of resized one by one.  Kept per (src, dst) (read-only): every image of a size
    shares it."""
    from skimage.transform import resize

    index = np.arange(src[0] * src[1], dtype=np.float64).reshape(src)
    out = resize(index, dst, order=0, preserve_range=True, mode="constant",
                 anti_aliasing=False).astype(np.int64)
    out.setflags(write=False)
    return out


def dilated_labels(seg: np.ndarray, radius: int) -> np.ndarray:
    """One mask per label of ``seg`` (H, W) int, from ``seg.min()`` to ``seg.max()`` (a label
    absent from ``seg`` gives an empty mask), each dilated by ``disk(radius)``: (L, H, W) bool,
    equal to ``skimage.morphology.dilation(seg == label, disk(radius))`` label by label (its
    default ``mode="reflect"``: the border mirrored, edge pixel included).

    Pixel p of label L's dilated mask is set iff some pixel p + o, o in the disk, has label L:
    every offset of the disk marks ``masks[seg[p + o], p]`` for all p at once (one pass per
    offset instead of one dilation per label)."""
    from skimage.morphology import dilation, disk

    footprint = disk(radius)
    first = int(seg.min())
    n_labels = int(seg.max()) - first + 1
    h, w = seg.shape
    if min(h, w) <= radius:  # the mirrored border would need more than one reflection
        return np.stack([dilation(seg == label, footprint=footprint)
                         for label in range(first, first + n_labels)])
    padded = np.pad(seg - first, radius, mode="symmetric")  # scipy's "reflect"
    masks = np.zeros((n_labels, h * w), bool)
    pixels = np.arange(h * w)
    for dy, dx in zip(*np.nonzero(footprint)):
        masks[padded[dy:dy + h, dx:dx + w].reshape(-1), pixels] = True
    return masks.reshape(n_labels, h, w)


def xrai_regions(attr: np.ndarray, masks: np.ndarray, area_threshold: float = 1.0,
                 min_pixel_diff: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """XRAI's greedy region ranking of one image.

    Parameters
    ----------
    attr : (H, W) float
        Pixel attributions.
    masks : (M, H, W) bool
        Candidate regions.

    Returns
    -------
    heatmap : (H, W) float64, every pixel the gain (mean attribution of the new pixels) of
        the region that added it; ranks : (H, W) int, 1 for the region of highest gain.
    """
    shape = attr.shape
    a = attr.reshape(-1).astype(np.float64)
    m = masks.reshape(len(masks), -1)
    out = np.full(a.shape, -np.inf)
    current = np.zeros(a.shape, bool)
    # new pixels and their attribution sum per mask, updated by the pixels each added region
    # covers (every pixel is subtracted once over the whole loop), not recomputed over all
    # pixels per region
    mt = np.ascontiguousarray(m.T, dtype=np.float64)  # (pixels, masks): rows of covered pixels
    counts = m.sum(axis=1).astype(np.float64)
    sums = a @ mt
    alive = np.ones(len(m), bool)
    scale = float(np.abs(a).max()) if a.size else 0.0
    trace: list[tuple[np.ndarray, float]] = []
    area = 0.0
    while area <= area_threshold:
        alive &= counts >= min_pixel_diff
        if not alive.any():
            break
        gains = np.full(len(m), -np.inf)
        gains[alive] = sums[alive] / counts[alive]
        # the updated sums carry rounding: the masks within a margin of the best are scored
        # exactly over the free pixels, and the first exact maximum wins (PAIR's tie rule)
        near = np.flatnonzero(gains >= gains.max() - 1e-9 * max(scale, 1e-300))
        free = ~current
        cand = mt[:, near]
        exact = (np.where(free, a, 0.0) @ cand) / (free @ cand)
        j = int(np.argmax(exact))
        best, gain = int(near[j]), float(exact[j])
        diff = m[best] & free
        trace.append((diff, gain))
        out[diff] = gain
        current |= diff
        area = current.mean()
        alive[best] = False
        covered = np.flatnonzero(diff)
        rows = mt[covered]
        counts -= rows.sum(axis=0)
        sums -= a[covered] @ rows
    rest = out == -np.inf
    if rest.any():
        out[rest] = a[rest].mean()
    ranks = np.zeros(a.shape, int)
    order = [d for d, _ in sorted(trace, key=lambda t: -t[1])] + ([rest] if rest.any() else [])
    for i, d in enumerate(order):
        ranks[d] = i + 1
    return out.reshape(shape), ranks.reshape(shape)


@register("xrai")
class Xrai(Explainer):
    """XRAI (Kapishnikov et al. 2019, PAIR ``saliency.core.XRAI``, algorithm "full").

    Parameters
    ----------
    steps : int
        Integrated-gradients steps per baseline (two baselines: 2 x ``steps`` gradients).
    area_threshold : float in (0, 1]
        Fraction of the image covered by ranked regions before the rest is filled.
    min_pixel_diff : int
        Regions adding fewer new pixels are dropped.
    internal_batch_size : int or None
        Model inputs (images x steps) per compiled gradient call (None: as
        :class:`~cnnvis_eval.methods.gradient.IntegratedGradients`).

    heatmap (N, H, W): the gain of each pixel's region (signed; constant over a region);
    ``attribution`` (N, H, W, C): the integrated gradients (mean of the two baselines) it
    ranks; ``meta["ranks"]`` (N, H, W) int: the region order (1 = most important).
    """

    reads_weights_once = False
    signed = True

    def __init__(self, model, *, steps: int = 100, area_threshold: float = 1.0,
                 min_pixel_diff: int = 50, internal_batch_size: int | None = None):
        super().__init__(model, steps=steps, area_threshold=area_threshold,
                         min_pixel_diff=min_pixel_diff, internal_batch_size=internal_batch_size)
        self.ig = IntegratedGradients(self.spec, steps=steps, internal_batch_size=internal_batch_size)
        self.area_threshold = number(area_threshold, "area_threshold", strict=True)
        self.min_pixel_diff = integer(min_pixel_diff, "min_pixel_diff")

    def attributions(self, x: np.ndarray, bound: BoundTarget) -> np.ndarray:
        """Mean integrated gradients from the min and max baselines, (N, H, W, C) float64,
        for a target with fixed indices."""
        flat = x.reshape(len(x), -1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        lo = np.broadcast_to(flat.min(1).reshape(shape), x.shape).astype(x.dtype)
        hi = np.broadcast_to(flat.max(1).reshape(shape), x.shape).astype(x.dtype)
        return 0.5 * (self.ig.path_integral(x, lo, bound) + self.ig.path_integral(x, hi, bound))

    def _explain_batch(self, x, bound):
        fx, idx = self.forward(x, bound)
        bound = bound.fixed(idx)
        attr = self.attributions(x, bound)
        heat = np.zeros(x.shape[:3], np.float64)
        ranks = np.zeros(x.shape[:3], np.int32)
        for n in range(len(x)):
            heat[n], ranks[n] = xrai_regions(attr[n].max(-1), segment_masks(x[n]),
                                             self.area_threshold, self.min_pixel_diff)
        return BatchResult(heat, attr, idx, fx, {"ranks": ranks})


__all__ = ["SEGMENTS", "Xrai", "segment_masks", "xrai_regions"]
