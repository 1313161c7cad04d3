"""Selecting the irrelevant region: the thesis' ``Select_tool`` (B.4.5) as an API.

The thesis marks, with a GUI, the image region a classifier should not use.  Here the same
masks — bool arrays (N, H, W), one per image, True on the irrelevant region — come from code:

- :class:`MaskSelection` — build masks step by step: ``add_array`` (masks one has, e.g. a
  data set's ``artefact_masks``), ``add_rectangle`` and ``add_polygon`` (drawn with
  :mod:`skimage.draw`; for all images or some), ``erase`` mode, ``dilate``; ``masks`` gives
  the result::

      sel = MaskSelection(len(x), 64, 64)
      sel.add_rectangle(50, 50, 62, 62)              # bottom-right corner of every image
      sel.add_polygon([(0, 0), (0, 10), (10, 0)], images=[3, 4])
      masks = sel.dilate(1).masks                    # bool (N, 64, 64)

- :func:`as_masks` — check masks (or one mask for all images) against the images;
- :func:`propose_from_cam` — automatic proposal: where the class map (CAM, or any registered
  method) is hot *outside* the object (when object masks are known);
- :func:`propose_from_channels` — automatic proposal: where chosen channels of the last
  convolutional layer (e.g. the top-ranked ones of a
  :func:`~cnnvis_eval.remedy.detect.filter_analysis`) are active.

Proposals are thresholded at a fraction of each image's maximum, so they do not depend on
the map's scale.  Nothing here changes the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf
from scipy.ndimage import binary_dilation
from skimage.draw import polygon, rectangle

from ..api import explain
from ..errors import InputError
from ..models.spec import as_spec
from .features import check_inputs, feature_maps


def as_masks(masks, n: int, size: tuple[int, int], what: str = "masks") -> np.ndarray:
    """Masks as bool (n, H, W): accepts (n, H, W) or one (H, W) mask for every image, bool or 0/1.

    Raises
    ------
    InputError
        Wrong shape (the message shows the expected one) or values other than 0/1.
    """
    m = np.asarray(masks)
    want = (n,) + tuple(size)
    if m.shape == tuple(size):
        m = np.broadcast_to(m, want)
    if m.shape != want:
        raise InputError(f"{what} have shape {m.shape}; expected {want} (one mask per image) or {tuple(size)}")
    if m.dtype != bool:
        if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
            raise InputError(f"{what} must be boolean (or 0/1 values); got dtype {m.dtype}")
        m = m.astype(bool)
    return np.array(m, dtype=bool)


def _check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be a fraction of the maximum in (0, 1], got {threshold!r}")
    return float(threshold)


class MaskSelection:
    """Irrelevant-region masks for ``n`` images of ``height x width``, built step by step.

    Every ``add_*`` method returns the selection (calls chain) and takes ``images``: the
    indices of the images it applies to (default all).  With ``erase=True`` the selection
    starts removing pixels instead of adding them.
    """

    def __init__(self, n: int, height: int, width: int):
        if n < 1 or height < 1 or width < 1:
            raise InputError(f"MaskSelection needs n, height, width >= 1; got {n}, {height}, {width}")
        self.shape = (int(n), int(height), int(width))
        self._masks = np.zeros(self.shape, bool)
        self.erase = False

    @property
    def masks(self) -> np.ndarray:
        """bool (N, H, W), a copy."""
        return self._masks.copy()

    def _apply(self, region: np.ndarray, images) -> MaskSelection:
        idx = np.arange(self.shape[0]) if images is None else np.asarray(images, int).reshape(-1)
        if idx.size and (idx.min() < -self.shape[0] or idx.max() >= self.shape[0]):
            raise InputError(f"images {idx.tolist()} out of range for {self.shape[0]} images")
        if self.erase:
            self._masks[idx] &= ~region
        else:
            self._masks[idx] |= region
        return self

    def add_array(self, masks, images: Sequence[int] | None = None) -> MaskSelection:
        """Add masks (len(images), H, W), or one (H, W) mask for each selected image."""
        n = self.shape[0] if images is None else len(np.asarray(images).reshape(-1))
        return self._apply(as_masks(masks, n, self.shape[1:]), images)

    def add_rectangle(self, top: int, left: int, bottom: int, right: int,
                      images: Sequence[int] | None = None) -> MaskSelection:
        """Add rows ``top:bottom`` and columns ``left:right`` (slice bounds, end excluded)."""
        h, w = self.shape[1:]
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise InputError(f"rectangle (top={top}, left={left}, bottom={bottom}, right={right}) "
                             f"is empty or outside the {h}x{w} image")
        region = np.zeros((h, w), bool)
        region[rectangle((top, left), end=(bottom - 1, right - 1), shape=(h, w))] = True
        return self._apply(region, images)

    def add_polygon(self, vertices, images: Sequence[int] | None = None) -> MaskSelection:
        """Add the polygon of ``vertices`` (K, 2), (row, col) pairs, K >= 3 (clipped to the image)."""
        v = np.asarray(vertices, float)
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise InputError(f"polygon vertices must have shape (K >= 3, 2) as (row, col); got {v.shape}")
        region = np.zeros(self.shape[1:], bool)
        region[polygon(v[:, 0], v[:, 1], self.shape[1:])] = True
        return self._apply(region, images)

    def dilate(self, pixels: int) -> MaskSelection:
        """Grow every mask by ``pixels`` (square neighbourhood)."""
        if not isinstance(pixels, (int, np.integer)) or pixels < 0:
            raise InputError(f"dilate needs an integer number of pixels >= 0, got {pixels!r}")
        if pixels:
            k = 2 * pixels + 1
            self._masks = binary_dilation(self._masks, np.ones((1, k, k), bool))
        return self


def augment_masks(masks, *, dilation: int = 0, jitter: int = 0, seed=None) -> np.ndarray:
    """Mask augmentation (thesis 5.1.2): grow, then shift, every mask.

    Parameters
    ----------
    masks : bool array (N, H, W)
    dilation : int
        Pixels to grow each mask by (square neighbourhood): covers the artefact's surround,
        which a receptive field overhanging the mask also sees.
    jitter : int
        Each mask is shifted by its own random offset in ``[-jitter, jitter]`` pixels per
        axis (zero fill at the border): an imprecise selection, as a hand-drawn one is.
    seed : int or numpy Generator, optional
        Draws the offsets.

    Returns
    -------
    bool (N, H, W), a new array
    """
    m = np.array(masks, dtype=bool)
    if m.ndim != 3:
        raise InputError(f"masks must have shape (N, H, W); got {m.shape}")
    for name, v in (("dilation", dilation), ("jitter", jitter)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"mask {name} must be an integer number of pixels >= 0, got {v!r}")
    if dilation:
        m = binary_dilation(m, np.ones((1, 2 * dilation + 1, 2 * dilation + 1), bool))
    if jitter:
        rng = np.random.default_rng(seed)
        h, w = m.shape[1:]
        pad = np.pad(m, ((0, 0), (jitter, jitter), (jitter, jitter)))
        out = np.empty_like(m)
        for i, (dr, dc) in enumerate(rng.integers(-jitter, jitter + 1, (len(m), 2))):
            out[i] = pad[i, jitter - dr:jitter - dr + h, jitter - dc:jitter - dc + w]
        m = out
    return m


def _hot(maps: np.ndarray, threshold: float) -> np.ndarray:
    """(N, H, W) maps -> bool: at least ``threshold`` x each map's positive maximum."""
    peak = np.maximum(maps, 0).reshape(len(maps), -1).max(1)
    return (maps >= threshold * peak[:, None, None]) & (peak[:, None, None] > 0)


def propose_from_cam(model, x, object_masks=None, *, method: str = "cam", target=None,
                     threshold: float = 0.5, margin: int = 0, **params) -> np.ndarray:
    """Propose irrelevant regions: where the class map is hot outside the object.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
        Model inputs.
    object_masks : array (N, H, W) or (H, W), optional
        The relevant object; pixels within ``margin`` of it are never proposed.  Without
        them the proposal is the map's hot region itself (for the user to judge).
    method : str
        A registered method (:func:`cnnvis_eval.list_methods`); default ``"cam"``.
    target : optional
        What to explain (default the top class), as :func:`cnnvis_eval.explain` takes it.
    threshold : float in (0, 1]
        Fraction of each image's positive maximum.
    margin : int
        Pixels by which the object masks are grown first.
    **params
        The method's parameters.

    Returns
    -------
    bool (N, H, W)
    """
    threshold = _check_threshold(threshold)
    spec = as_spec(model)
    x = check_inputs(spec, x)
    heat = explain(method, spec, x, target=target, progress=False, **params).heatmap
    proposal = _hot(heat, threshold)
    if object_masks is not None:
        obj = as_masks(object_masks, len(x), x.shape[1:3], "object_masks")
        if not isinstance(margin, (int, np.integer)) or margin < 0:
            raise InputError(f"margin must be an integer >= 0 (pixels), got {margin!r}")
        if margin:
            obj = binary_dilation(obj, np.ones((1, 2 * margin + 1, 2 * margin + 1), bool))
        proposal &= ~obj
    return proposal


def propose_from_channels(model, x, channels: Iterable[int], *, layer: str | None = None,
                          threshold: float = 0.5) -> np.ndarray:
    """Propose irrelevant regions: where the given channels of ``layer`` are active.

    The union of the channels' activation regions: each channel's map, resized to the input
    (bilinear), is thresholded at ``threshold`` x its maximum over all of ``x`` (not per
    image: an image where a channel stays silent gets nothing from it, not its noise).

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
    channels : iterable of int
        E.g. ``report.ranking[:3]`` of a :func:`~cnnvis_eval.remedy.detect.filter_analysis`.
    layer : str, optional
        Default: the map the CAM head pools (else the last convolutional feature map).
    threshold : float in (0, 1]

    Returns
    -------
    bool (N, H, W)
    """
    threshold = _check_threshold(threshold)
    spec = as_spec(model)
    x = check_inputs(spec, x)
    a = feature_maps(spec, x, layer)
    ch = np.asarray(list(channels), int).reshape(-1)
    if ch.size == 0 or ch.min() < 0 or ch.max() >= a.shape[-1]:
        raise InputError(f"channels must be a non-empty list of indices in [0, {a.shape[-1]}); got {ch.tolist()}")
    up = tf.image.resize(np.maximum(a[..., ch], 0), x.shape[1:3], method="bilinear").numpy()
    peak = up.max((0, 1, 2))  # (k,): each channel's maximum over the images
    return ((up >= threshold * peak) & (peak > 0)).any(-1)


__all__ = ["MaskSelection", "as_masks", "augment_masks", "propose_from_cam", "propose_from_channels"]
