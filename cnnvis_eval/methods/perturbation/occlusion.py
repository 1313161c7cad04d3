"""Occlusion sensitivity (Zeiler & Fergus 2014): a sliding window set to a baseline value."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ... import params as P
from ...errors import InputError
from ...targets import BoundTarget
from ..base import register, targets_forward, targets_key
from .sampling import PerturbationExplainer

def window_positions(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of a window sliding over ``size`` pixels with ``stride``; a last window
    flush with the far border is added when the stride does not land there, so every pixel
    is covered."""
    pos = list(range(0, size - window + 1, stride))
    if pos[-1] != size - window:
        pos.append(size - window)
    return np.asarray(pos, np.int32)


@register("occlusion")
class Occlusion(PerturbationExplainer):
    """Occlusion sensitivity (Zeiler & Fergus 2014).

    A ``window`` slides over the image with ``stride`` (plus one window flush with the
    bottom/right border when the stride does not reach it, so every pixel is covered);
    each position replaces the window, in all channels, by the baseline.  The drop of the
    target value, ``f(x) - f(x_occluded)``, is credited to every pixel of the window;
    heatmap = mean drop over the windows covering each pixel (signed; 0 for pixels that no
    window covers, which only happens with a stride larger than the window).

    Parameters
    ----------
    window : int or (h, w), optional
        Window size in pixels; default ``max(2, round(min(H, W) / 14))`` (16 px at 224).
    stride : int or (h, w), optional
        Default half the window.
    baseline : number, (C,) or (H, W, C) array, "zeros", "black" or "mean"
        Occluding value in model-input units (0 is the mean colour for caffe-style
        preprocessing and mid-gray for [-1, 1] models: the grey square of the paper).
    batch_size, progress
        See :class:`PerturbationExplainer`.

    ``meta["windows"]``: number of window positions per image; ``meta["coverage"]``
    (H, W) int: how many windows cover each pixel.
    """

    def __init__(self, model, *, window=None, stride=None, baseline=0.0,
                 batch_size: int | None = None, progress: bool | None = None):
        super().__init__(model, batch_size=batch_size, progress=progress, window=window,
                         stride=stride, baseline=baseline if np.ndim(baseline) == 0 else "array")
        self.window = None if window is None else P.pair(window, "window")
        self.stride = None if stride is None else P.pair(stride, "stride")
        self.baseline = P.check_baseline(baseline)
        self._check_static_shape()

    def geometry(self, shape) -> tuple[tuple[int, int], tuple[int, int]]:
        """Window and stride used for images of shape (H, W, ...)."""
        h, w = int(shape[0]), int(shape[1])
        win = self.window or (max(2, round(min(h, w) / 14)),) * 2
        win = (min(win[0], h), min(win[1], w)) if self.window is None else win
        stride = self.stride or (max(1, win[0] // 2), max(1, win[1] // 2))
        return win, stride

    def _check_image_shape(self, shape):
        (wh, ww), _ = self.geometry(shape)
        if wh > shape[0] or ww > shape[1]:
            raise InputError(
                f"occlusion window {wh}x{ww} is larger than the image ({shape[0]}x{shape[1]})"
            )

    def positions(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """(P,) top and left offsets of all window positions, row-major."""
        (wh, ww), (sh, sw) = self.geometry(shape)
        ys = window_positions(int(shape[0]), wh, sh)
        xs = window_positions(int(shape[1]), ww, sw)
        return np.repeat(ys, len(xs)), np.tile(xs, len(ys))

    def calls_per_image(self, shape) -> int:
        return len(self.positions(shape)[0])

    def _occlusion_fn(self, bounds: list[BoundTarget]):
        def build():
            fwd, img = targets_forward(self.spec, bounds), self._image_spec()  # one forward of every target
            i32 = tf.int32

            @tf.function(autograph=False, input_signature=[
                img, img, tf.TensorSpec((None,), i32), tf.TensorSpec((None,), i32),
                tf.TensorSpec((2,), i32), tf.TensorSpec((len(bounds),), img.dtype),
                tf.TensorSpec((None, len(bounds)), i32),
            ])
            def score(x, base, top, left, size, f0, indices):
                shape = tf.shape(x)
                rows = tf.range(shape[0])[None, :]
                cols = tf.range(shape[1])[None, :]
                in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size[0])  # (b, H)
                in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size[1])  # (b, W)
                mask = in_rows[:, :, None] & in_cols[:, None, :]  # (b, H, W)
                xs = tf.where(mask[..., None], base[None], x[None])
                scores = fwd(xs, indices)[0]  # (b, T)
                drop = f0[None, :] - scores
                credit = tf.einsum("bt,bhw->thw", drop, tf.cast(mask, drop.dtype))
                return scores, credit

            return score

        return self._cached(("occlusion",) + targets_key(bounds), build)

    def _explain_image(self, x, bounds, sampling):
        scores, bounds = self._score(x, bounds, sampling)
        image = x[0]
        base = self._baseline_image(self.baseline, image)
        top, left = self.positions(image.shape)
        (wh, ww), (sh, sw) = self.geometry(image.shape)
        fn = self._occlusion_fn(bounds)
        size = np.array([wh, ww], np.int32)
        f0 = np.asarray(scores[0], self.dtype)  # (T,)
        parts = sampling.feed(
            fn, len(top),
            lambda a, b: (top[a:b], left[a:b], size, f0, self._index_rows(bounds, b - a)),
            image, base,
        )
        credit = np.sum([p[1].astype(np.float64) for p in parts], axis=0)  # (T, H, W)
        ys = window_positions(image.shape[0], wh, sh)
        xs = window_positions(image.shape[1], ww, sw)
        cover_r = np.zeros(image.shape[0], np.int64)
        cover_c = np.zeros(image.shape[1], np.int64)
        np.add.at(cover_r, (ys[:, None] + np.arange(wh)).ravel(), 1)
        np.add.at(cover_c, (xs[:, None] + np.arange(ww)).ravel(), 1)
        coverage = np.outer(cover_r, cover_c)
        # pixels no window covers (stride > window) get 0
        heats = [np.divide(c, coverage, out=np.zeros_like(c), where=coverage > 0) for c in credit]
        meta = {"windows": len(top), "window": (wh, ww), "stride": (sh, sw), "coverage": coverage}
        return self._results(heats, bounds, scores, [dict(meta) for _ in bounds])


__all__ = ["Occlusion", "window_positions"]
